"""codeprm rewards inside RL frameworks: OpenRLHF, veRL and TRL (docs/integrations.md)."""
