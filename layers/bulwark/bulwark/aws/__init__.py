"""AWS clients, one way to build each: the lean DynamoDB/Lambda/Secrets Manager/KMS clients over a keep-alive
HTTP/1.1 connection with SigV4, boto3 only off the hot path, and the X-Ray provider behind Powertools' interface.
"""
