"""Cloud auto-join (`provider=aws ...` retry_join entries) and cloud metadata (ECS, EC2).

discover.py parses and checks join strings and resolves them for the retry-join loop; aws.py
finds EC2 instances and ECS tasks by tag; metadata.py reads the ECS task metadata endpoint v4
and IMDSv2. See docs/cloud-auto-join.md.
"""


class DiscoverError(ValueError):
    """A join string that cannot be used, or a provider that failed; the text names the problem."""
