"""The wire schemas of codeprm's HTTP APIs (pydantic models), one module per service, plus the
labeled rows the labeler exports. Field names are fixed by docs/design.md ("Contracts")."""
