"""The AWS providers: one module per resource kind, the same verbs in each, no ledger code."""
