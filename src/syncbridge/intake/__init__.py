"""Event intake: Segment-shaped tracking calls, received by the daemon, stored as records.

`segment.py` knows the API's rules, `commit.py` stores requests in group commits, `routes.py`
serves them. Events land in the stream of a `connector = "intake"` source, through its mapping.
"""
