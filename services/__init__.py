"""The four codeprm services, installed as `codeprm.services`. Each folder owns its code; they
share only codeprm's library modules (`codeprm.api`, `codeprm.client`, `codeprm.serving`, ...)."""
