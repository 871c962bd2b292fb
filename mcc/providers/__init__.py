"""Providers: create / find / delete / describe one kind of resource each; no ledger code."""
