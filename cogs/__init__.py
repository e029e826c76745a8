"""Discord features, one extension per feature: slash commands, buttons and modals."""
