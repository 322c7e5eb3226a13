"""The fleet audit: attacks and breaks the running local fleet (Molecule scenario `fleet`) and
records what held, as `RELIABILITY.md`.

Everything runs from the control node: commands inside the fleet's containers go through
`docker exec`, clients outside the site run on the probe container or on this machine (which
reaches the lb over the test bed network like any Internet client). `python -m audit --help`
lists the checks; `make audit` runs them all.
"""
