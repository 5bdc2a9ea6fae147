from vaezip.cli import app

app(prog_name="vaezip")
