"""The four codeprm services. Each folder owns its code; they share only `contracts`."""
