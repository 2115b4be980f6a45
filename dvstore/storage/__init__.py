"""Storage: the LMDB layer, the object store and the blob store. No dataset semantics here."""
