"""Data access: one module owns each DynamoDB table; nothing else builds DynamoDB requests."""
