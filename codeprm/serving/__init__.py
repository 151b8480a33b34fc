"""What every codeprm HTTP service is built from: the settings base, JSON logs, `/healthz`,
`/readyz` and `/metrics`, the errors and their JSON bodies, and strict JSON parsing."""
