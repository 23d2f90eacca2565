"""Activities: every side effect of a trial (load the journey, render and send, record)."""
