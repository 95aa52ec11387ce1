"""The stage's bucket, made (or checked) by `deploy apply` outside the stack: the Lambda package is
uploaded to it before the stack exists, Locaria's own bucket is often there already, and a bucket
full of users' data must outlive `deploy destroy`.

A new bucket gets every public access blocked, objects owned by the bucket owner (no ACLs),
default encryption and the CORS rule browsers need for presigned PUTs and GETs.  An existing one
gets what is missing of the same, keeping its other settings.  Object-created events under the
upload prefix go to the upload Lambda (one notification entry, ours, beside any others).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from locaria_batch.deploy.aws import Report, aws_call, error_code
from locaria_batch.deploy.stages import Target
from locaria_batch.errors import DeployError

BLOCK_ALL = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
             "RestrictPublicBuckets": True}
CORS_METHODS = ["PUT", "GET", "HEAD"]
CORS_RULE_ID = "locaria-batch-presigned"
MISSING = {"NoSuchPublicAccessBlockConfiguration", "NoSuchCORSConfiguration", "NoSuchBucket", "404"}


def notification_id(target: Target) -> str:
    return f"locaria-batch-{target.suffix}-uploads"


def cors_rule(target: Target) -> dict[str, Any]:
    return {"ID": CORS_RULE_ID, "AllowedOrigins": target.cors_origins, "AllowedMethods": CORS_METHODS,
            "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3000}


def _read(what: str, call: Any, **kwargs: Any) -> Any:
    """A read whose "not configured" answer is None."""
    try:
        return call(**kwargs)
    except ClientError as exc:
        if error_code(exc) in MISSING:
            return None
        raise DeployError(f"{what} failed: {error_code(exc)}: {exc.response.get('Error', {}).get('Message')}") \
            from exc


def bucket_exists(s3: Any, target: Target) -> bool:
    try:
        s3.head_bucket(Bucket=target.bucket)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return False
        if error_code(exc) in ("403", "AccessDenied"):
            raise DeployError(f"bucket {target.bucket} exists but these credentials may not use it (another "
                              "account's, or a policy refuses them): choose another `bucket` in locaria.json") \
                from exc
        raise DeployError(f"checking bucket {target.bucket} failed: {error_code(exc)}") from exc
    return True


def ensure_bucket(s3: Any, target: Target, report: Report) -> str:
    """Create the bucket, or bring an existing one up to what the stack needs; say which."""
    name = target.bucket
    if not bucket_exists(s3, target):
        options: dict[str, Any] = {"Bucket": name, "ObjectOwnership": "BucketOwnerEnforced"}
        if target.region != "us-east-1":  # the one region that refuses a location constraint
            options["CreateBucketConfiguration"] = {"LocationConstraint": target.region}
        aws_call(f"creating bucket {name}", s3.create_bucket, **options)
        aws_call(f"encrypting bucket {name}", s3.put_bucket_encryption, Bucket=name,
                 ServerSideEncryptionConfiguration={"Rules": [
                     {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        created = True
    else:
        created = False
    blocked = _read("reading the public access block", s3.get_public_access_block, Bucket=name)
    if not blocked or blocked["PublicAccessBlockConfiguration"] != BLOCK_ALL:
        aws_call(f"blocking public access to {name}", s3.put_public_access_block, Bucket=name,
                 PublicAccessBlockConfiguration=BLOCK_ALL)
        if not created:
            report(f"bucket {name}: public access now blocked")
    rules = (_read("reading the bucket's CORS rules", s3.get_bucket_cors, Bucket=name) or {}).get("CORSRules", [])
    wanted = cors_rule(target)
    if wanted not in rules:
        kept = [rule for rule in rules if rule.get("ID") != CORS_RULE_ID]
        aws_call(f"setting the CORS rule of {name}", s3.put_bucket_cors, Bucket=name,
                 CORSConfiguration={"CORSRules": [*kept, wanted]})
        if not created:
            report(f"bucket {name}: CORS rule for presigned PUT/GET from {', '.join(target.cors_origins)} set"
                   + (f" (beside {len(kept)} other rule(s))" if kept else ""))
    report(f"bucket {name} " + ("created (public access blocked, encrypted, CORS for presigned PUT/GET)" if created
                                else "checked"))
    return "created" if created else "checked"


def _notifications(s3: Any, target: Target) -> dict[str, Any]:
    current = aws_call("reading the bucket's notifications", s3.get_bucket_notification_configuration,
                       Bucket=target.bucket)
    return {key: value for key, value in current.items() if key != "ResponseMetadata"}


def _without_ours(config: dict[str, Any], target: Target) -> dict[str, Any]:
    functions = [entry for entry in config.get("LambdaFunctionConfigurations", [])
                 if entry.get("Id") != notification_id(target)]
    return {**config, "LambdaFunctionConfigurations": functions}


def same_notification(ours: dict[str, Any], entry: dict[str, Any]) -> bool:
    """S3 answers filter rule names as "Prefix" whatever case they were given in."""
    def rules(item: dict[str, Any]) -> list[tuple[str, str]]:
        return [(rule["Name"].lower(), rule["Value"]) for rule in item.get("Filter", {}).get("Key", {}).get(
            "FilterRules", [])]
    return all(entry.get(key) == ours[key] for key in ("Id", "LambdaFunctionArn", "Events")) and \
        rules(entry) == rules(ours)


def notify_uploads(s3: Any, target: Target, function_arn: str, report: Report) -> None:
    """ObjectCreated under the upload prefix -> the upload Lambda (its permission is in the stack)."""
    config = _notifications(s3, target)
    ours = {"Id": notification_id(target), "LambdaFunctionArn": function_arn, "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": target.upload_prefix}]}}}
    if any(same_notification(ours, entry) for entry in config.get("LambdaFunctionConfigurations", [])):
        return
    updated = _without_ours(config, target)
    updated["LambdaFunctionConfigurations"].append(ours)
    aws_call(f"sending s3://{target.bucket}/{target.upload_prefix} events to the upload Lambda",
             s3.put_bucket_notification_configuration, Bucket=target.bucket, NotificationConfiguration=updated)
    report(f"bucket {target.bucket}: objects created under {target.upload_prefix} now invoke the upload Lambda")


def forget_uploads(s3: Any, target: Target, report: Report) -> None:
    if not bucket_exists(s3, target):
        return
    config = _notifications(s3, target)
    updated = _without_ours(config, target)
    if len(updated["LambdaFunctionConfigurations"]) < len(config.get("LambdaFunctionConfigurations", [])):
        aws_call("removing the upload notification", s3.put_bucket_notification_configuration,
                 Bucket=target.bucket, NotificationConfiguration=updated)
        report(f"bucket {target.bucket}: upload notification removed")


def delete_bucket(s3: Any, target: Target, report: Report) -> int:
    """Empty the bucket (every version) and delete it; the number of objects deleted."""
    if not bucket_exists(s3, target):
        return 0
    deleted = 0
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=target.bucket):
        objects = [{"Key": item["Key"], "VersionId": item["VersionId"]}
                   for item in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for start in range(0, len(objects), 1000):
            aws_call(f"emptying bucket {target.bucket}", s3.delete_objects, Bucket=target.bucket,
                     Delete={"Objects": objects[start:start + 1000], "Quiet": True})
        deleted += len(objects)
    aws_call(f"deleting bucket {target.bucket}", s3.delete_bucket, Bucket=target.bucket)
    report(f"bucket {target.bucket} deleted ({deleted} object(s))")
    return deleted
