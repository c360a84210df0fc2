"""What every capability shares: addresses, signed link tokens, queueing by task name, rate limits, consent evidence and wording, the suppression list, one bounded per-process cache."""
