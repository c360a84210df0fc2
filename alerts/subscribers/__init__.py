"""A reader's control of their subscription: one-click unsubscribe, the preference centre, import and export of lists, and the admin of readers and suppressions."""
