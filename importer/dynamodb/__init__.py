"""Talking to DynamoDB fast and safely: client, signing, retry, pacing, writers, lookups."""
