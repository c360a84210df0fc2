"""Development only: demo content, the development mailbox and its file mail backend."""
