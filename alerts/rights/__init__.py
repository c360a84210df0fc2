"""Readers' data rights: download, erasure, retention purges, the privacy notice."""
