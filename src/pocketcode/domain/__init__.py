"""Pure types and rules: states, allowed transitions and errors. No I/O lives here."""
