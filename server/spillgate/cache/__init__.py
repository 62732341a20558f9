"""The response cache: exact and guarded semantic matches, scoped per tenant (step 3)."""
