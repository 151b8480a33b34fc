from codeprm.cli import app

app(prog_name="codeprm")
