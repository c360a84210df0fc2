"""Breaking alerts: the editor's actions, the audience, the fan-out through the batch engine, live progress, and the admin."""
