"""The shapes that cross Vigil's walls: dataclasses, Protocols and exceptions.

The server (`app`) implements the Protocols and answers with these dataclasses; the nurse
station (`dashboard`) consumes them without knowing who implements them. Nothing here
imports from `app`, `dashboard`, `simulators` or `vigil`: only the standard library and
`monitor`, the clinical core both sides already share.
"""
