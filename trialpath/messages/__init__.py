"""Messages: templates rendered per persona and language, their checks and previews, sample
users, the journey drawn for marketers, in-app guidance."""
