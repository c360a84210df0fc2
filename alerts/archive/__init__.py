"""The public archive: a web page for every sent alert, an index and RSS/Atom feeds."""
