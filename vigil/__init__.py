"""The composition root: the one package that puts Vigil's parts together.

`vigil.server` serves the API (`app`) with the nurse station (`dashboard`) on top;
`vigil.cli` is the `vigil` command (the server's admin commands, `serve`, `demo`, and the
simulators' commands). Nothing imports `vigil`: the parts meet here and only here.
"""
