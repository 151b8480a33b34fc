"""Everything the services share: wire schemas, HTTP clients, settings base, logging, health.

Services import `contracts`, never each other.
"""
