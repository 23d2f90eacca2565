"""Trialpath: durable onboarding journeys for SaaS trial users."""

__version__ = "0.1.0"
