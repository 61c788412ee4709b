"""nitihw.rtl (arrives in a later issue)."""
