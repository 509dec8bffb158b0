"""The builder Lambda's domain: an S3 upload in, a published and attached layer version out.

Pure steps (publish, attach, report) take adapters as arguments; `aws.py` holds the boto3 side.
"""
