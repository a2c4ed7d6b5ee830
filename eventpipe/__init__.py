"""eventpipe: a stream-processing connector pipeline service.

CloudEvents on Kafka topics from webhooks, Postgres CDC and the Python API;
schema-validated jq transforms; exactly-once sinks; dead-letter topics.
"""

__version__ = "0.1.0"
