"""Device adapters: HL7 v2 over MLLP, MQTT, websocket ingest, and the runtime that runs them.

Adapters are found through the `vigil.adapters` entry-point group (see `discovery`),
chosen by VIGIL_ADAPTERS, and started and stopped with the server (see `runtime`).
"""
