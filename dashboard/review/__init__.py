"""Session review pages: the list of sessions and one session's trace, figures and alarm log."""
