from edgepipe.cli import run

run()
