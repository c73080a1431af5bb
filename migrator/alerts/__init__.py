"""Where an alert gets built and sent.

``notify``: the event registry (``EVENTS``), each event's JSON and Slack payloads, ``send_event``;
``webhook``: delivery (signed, retried, bounded in time and memory). Paging once per incident is
``migrator.recover.incident``'s. This face imports nothing.
"""
