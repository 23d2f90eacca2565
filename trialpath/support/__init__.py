"""The humans in the journey: agents' calendars and success calls, support's tasks."""
