"""Check function: runs an upload's code for the builder, in a function with no rights.

One is deployed per enabled target (runtime × architecture). Its role reaches its own logs
only and its environment holds no secret; it gets its input by pre-signed URL and returns a
verdict, or stores bytecode or a wheel by pre-signed URL. Every invocation runs in a fresh
execution environment (sandbox_host.lifecycle says why and how).
"""

import os

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from sandbox_host import actions, lifecycle

lifecycle.prepare_environment()  # init: /tmp wiped, no stray process of this user, subreaper
logger = Logger()


@lifecycle.one_invocation_per_environment
@logger.inject_lambda_context
def handler(event: dict, context: LambdaContext) -> dict:
    result = actions.run(event, lambda: context.get_remaining_time_in_millis() / 1000, os.environ)
    logger.info(
        "Action done",
        action=event.get("action"),
        ok=result.get("ok"),
        error=result.get("error", {}).get("kind"),
    )
    return result
