"""The batch engine alerts and digests share: cut, claim, lease, close (batches), every raw statement (ledger), and the provider transport with its error kinds (provider)."""
