def lambda_handler(event, context):\n    return {}
