from flows.cli import app

app(prog_name="ortho")
