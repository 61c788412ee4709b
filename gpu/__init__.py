"""nitihw.gpu (arrives in a later issue)."""
