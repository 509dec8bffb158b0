"""lifecycle: retention never deletes what is in use, rollback replaces only the layer's own
version after checking everything, sharing is one statement per grantee. An in-memory account
stands in for Lambda and SSM here; tests/e2e/test_lifecycle.py runs the same code on moto."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from layer_builder.errors import InputError
from layer_builder.service.attach import AttachedLayer, ConcurrentUpdate, FunctionState
from layer_builder.service.lifecycle import (
    LATEST,
    FunctionVersion,
    Grant,
    IncompatibleConsumer,
    LayerVersion,
    UnknownFunction,
    UnknownLayer,
    UnknownVersion,
    apply_retention,
    apply_sharing,
    describe,
    grantees,
    plan_retention,
    repoint,
    rollback,
    share,
    sweep,
    unshare,
)

ACCOUNT = "arn:aws:lambda:us-east-1:123456789012"
NOW = datetime(2026, 11, 20, tzinfo=UTC)


def arn(layer: str, number: int | None = None) -> str:
    return f"{ACCOUNT}:layer:{layer}" + (f":{number}" if number is not None else "")


class Account:
    """Layers, functions (with published versions) and SSM pointers of one region."""

    def __init__(self) -> None:
        self.layers: dict[str, dict[int, LayerVersion]] = {}
        self.policies: dict[tuple[str, int], list[dict]] = {}
        self.functions: dict[str, list[FunctionVersion]] = {}  # [$LATEST, 1, 2, ...]
        self.pointers: dict[str, str] = {}
        self.deleted: list[str] = []
        self.updates: list[tuple[str, list[str]]] = []
        self.conflicts = 0
        #: Called on each all_versions(): lets a test change the account between two looks.
        self.on_list = None
        self.lists = 0

    # -- set-up
    def publish(self, layer: str, age_days: float, runtime="python3.13", arch="x86_64") -> str:
        versions = self.layers.setdefault(layer, {})
        number = max(versions, default=0) + 1
        digest = hashlib.sha256(f"{layer}{number}".encode()).digest()
        versions[number] = LayerVersion(layer, number, arn(layer, number),
                                        NOW - timedelta(days=age_days),
                                        base64.b64encode(digest).decode(), 1000 + number,
                                        (runtime,), (arch,))
        return arn(layer, number)

    def function(self, name: str, *layers: str, runtime="python3.13", arch="x86_64") -> None:
        """Creates the function, or sets its $LATEST layers (published versions stay)."""
        published = self.functions.get(name, [None])[1:]
        self.functions[name] = [FunctionVersion(name, LATEST, f"{ACCOUNT}:function:{name}",
                                                runtime, arch, tuple(layers)), *published]

    def publish_function(self, name: str) -> None:
        latest = self.functions[name][0]
        number = str(len(self.functions[name]))
        self.functions[name].append(FunctionVersion(name, number, f"{latest.arn}:{number}",
                                                    latest.runtime, latest.arch, latest.layers))

    # -- LayerStore
    def layer_names(self):
        return [name for name, versions in self.layers.items() if versions]

    def versions(self, layer_name):
        listed = sorted(self.layers.get(layer_name, {}).values(), key=lambda v: -v.number)
        return [LayerVersion(v.layer_name, v.number, v.arn, v.created, "", 0, v.runtimes,
                             v.architectures) for v in listed]

    def version(self, layer_name, number):
        return self.layers.get(layer_name, {}).get(number)

    def delete(self, version):
        del self.layers[version.layer_name][version.number]
        self.deleted.append(version.arn)

    def statements(self, layer_name, number):
        return list(self.policies.get((layer_name, number), []))

    def grant(self, layer_name, number, sid, principal, organization):
        statement = {"Sid": sid, "Effect": "Allow", "Action": "lambda:GetLayerVersion",
                     "Principal": {"AWS": f"arn:aws:iam::{principal}:root"} if principal != "*" else "*",
                     "Resource": arn(layer_name, number)}
        if organization:
            statement["Condition"] = {"StringEquals": {"aws:PrincipalOrgID": organization}}
        self.policies.setdefault((layer_name, number), []).append(statement)

    def revoke(self, layer_name, number, sid):
        self.policies[(layer_name, number)] = [s for s in self.policies[(layer_name, number)]
                                               if s["Sid"] != sid]

    # -- FunctionCatalog
    def all_versions(self):
        self.lists += 1
        if self.on_list:
            self.on_list(self.lists)
        return [config for versions in self.functions.values() for config in versions]

    def latest(self, name):
        return self.functions[name][0] if name in self.functions else None

    # -- attach.Functions
    def get(self, name):
        config = self.functions[name][0]
        return FunctionState(name, tuple(AttachedLayer(a, 10) for a in config.layers), 100, "r")

    def set_layers(self, state, layers):
        if self.conflicts:
            self.conflicts -= 1
            raise ConcurrentUpdate(state.name)
        latest = self.functions[state.name][0]
        self.functions[state.name][0] = FunctionVersion(latest.name, LATEST, latest.arn,
                                                        latest.runtime, latest.arch, tuple(layers))
        self.updates.append((state.name, layers))


class Pointer:
    def __init__(self, account: Account) -> None:
        self.account = account

    def get(self, layer_name):
        return self.account.pointers.get(layer_name)

    def put(self, layer_name, version_arn):
        self.account.pointers[layer_name] = version_arn


@pytest.fixture
def account() -> Account:
    return Account()


def retain(account: Account, layer: str, keep: int, **kwargs):
    return apply_retention(layer, keep, layers=account, catalog=account, pointer=Pointer(account),
                           now=NOW, **kwargs)


def actions(decisions) -> dict[int, str]:
    return {d.version.number: d.action for d in decisions}


# -- retention -------------------------------------------------------------------------------

def test_prune_keeps_the_newest_and_deletes_the_rest_saying_why(account):
    for age in (50, 40, 30, 20):
        account.publish("s-data-emr", age)
    decisions = retain(account, "s-data-emr", 2)
    assert actions(decisions) == {4: "keep", 3: "keep", 2: "deleted", 1: "deleted"}
    assert decisions[0].reasons == ["among the newest 2 (--keep 2)"]
    assert decisions[2].reasons == ["beyond the newest 2", "used by no function",
                                    "not named by the SSM pointer"]
    assert sorted(account.layers["s-data-emr"]) == [3, 4]


def test_a_version_used_by_a_published_function_version_or_named_by_the_pointer_survives(account):
    old, pointed, _, _ = (account.publish("lay", age) for age in (40, 30, 20, 10))
    account.function("fn", old)
    account.publish_function("fn")  # version 1 of fn is frozen on `old`
    account.function("fn", arn("lay", 4))  # $LATEST moves on; fn:1 still uses `old`
    account.pointers["lay"] = pointed
    decisions = retain(account, "lay", 1)
    assert actions(decisions) == {4: "keep", 3: "deleted", 2: "keep", 1: "keep"}
    assert decisions[3].reasons == ["used by fn:1"]
    assert decisions[2].reasons == ["named by the SSM pointer"]
    assert account.deleted == [arn("lay", 3)]


def test_a_version_attached_while_pruning_is_kept(account):
    for age in (30, 20, 10):
        account.publish("lay", age)
    account.function("late")
    # The second look at the functions (just before deleting) sees version 1 attached.
    account.on_list = lambda n: n == 2 and account.function("late", arn("lay", 1))
    decisions = retain(account, "lay", 1)
    assert actions(decisions) == {3: "keep", 2: "deleted", 1: "keep"}
    assert decisions[2].reasons == ["used by late", "(attached while pruning)"]


def test_older_than_keeps_young_versions_and_dry_run_deletes_nothing(account):
    for age in (100, 5, 3):
        account.publish("lay", age)
    decisions = retain(account, "lay", 1, older_than_days=7, dry_run=True)
    assert actions(decisions) == {3: "keep", 2: "keep", 1: "would delete"}
    assert decisions[1].reasons == ["younger than 7 days (5 days old)"]
    assert "older than 7 days (100 days old)" in decisions[2].reasons
    assert account.deleted == [] and len(account.layers["lay"]) == 3


def test_keep_zero_keeps_every_version_and_negative_is_refused(account):
    for age in (3, 2, 1):
        account.publish("lay", age)
    decisions = plan_retention(account.versions("lay"), 0, used={}, pointer=None, now=NOW,
                               keep_label="KEEP_VERSIONS")
    assert {d.action for d in decisions} == {"keep"}
    assert decisions[0].reasons == ["KEEP_VERSIONS=0 keeps every version"]
    with pytest.raises(InputError, match="must be 0"):
        retain(account, "lay", -1)


def test_sweep_covers_only_the_stack_prefix(account):
    for layer in ("stack-a", "stack-b", "other-x"):
        for age in (3, 2, 1):
            account.publish(layer, age)
    results = sweep("stack-", 1, layers=account, catalog=account, pointer=Pointer(account), now=NOW)
    assert set(results) == {"stack-a", "stack-b"}
    assert len(account.layers["other-x"]) == 3
    assert sorted(account.layers["stack-a"]) == [3]
    assert sweep("stack-", 0, layers=account, catalog=account, pointer=None, now=NOW) == {}
    with pytest.raises(InputError, match="prefix"):
        sweep("", 1, layers=account, catalog=account, pointer=None, now=NOW)


# -- reading ---------------------------------------------------------------------------------

def test_unknown_layer_names_the_layers_with_the_same_prefix(account):
    account.publish("stack-data-emr", 1)
    account.publish("stack-ml-torch", 1)
    account.publish("unrelated", 1)
    with pytest.raises(UnknownLayer) as refused:
        describe("stack-dta-emr", account, account)
    assert "stack-data-emr, stack-ml-torch" in str(refused.value)
    assert "unrelated" not in str(refused.value)


def test_describe_marks_the_pointer_and_the_users(account):
    first, second = account.publish("lay", 2), account.publish("lay", 1)
    account.function("fn", "arn:other:layer:x:1", first)
    account.pointers["lay"] = first
    rows = describe("lay", account, account, Pointer(account))
    assert [(r.version.number, r.used_by, r.pointer) for r in rows] == [(2, (), False),
                                                                         (1, ("fn",), True)]
    expected = hashlib.sha256(b"lay1").hexdigest()
    assert rows[1].to_dict()["sha256"] == expected and rows[1].to_dict()["size"] == 1001
    assert second == rows[0].version.arn


# -- rollback --------------------------------------------------------------------------------

def test_rollback_replaces_only_the_layers_own_version_and_moves_the_pointer(account):
    one, two = account.publish("lay", 2), account.publish("lay", 1)
    other = "arn:aws:lambda:us-east-1:123456789012:layer:utils:9"
    account.function("fn", other, two, "arn:aws:lambda:us-east-1:123456789012:layer:z:1")
    account.function("bystander", other)
    account.function("foreign", "arn:aws:lambda:us-east-1:999999999999:layer:lay:4")
    account.pointers["lay"] = two
    result = rollback("lay", 1, layers=account, catalog=account, functions=account,
                      pointer=Pointer(account))
    assert account.functions["fn"][0].layers == (other, one, "arn:aws:lambda:us-east-1:123456789012:layer:z:1")
    assert account.functions["bystander"][0].layers == (other,)
    assert account.pointers["lay"] == one
    assert [(c.function, c.status, c.previous) for c in result.consumers] == [("fn", "attached", two)]


@pytest.mark.parametrize("case", ["deleted version", "unknown function", "not a user", "wrong arch"])
def test_a_refused_rollback_changes_nothing(account, case):
    one, two = account.publish("lay", 2), account.publish("lay", 1)
    account.function("fn", two)
    account.function("stranger")
    account.function("arm", two, arch="arm64")
    account.pointers["lay"] = two
    number, consumers, error, words = {
        "deleted version": (7, ["fn"], UnknownVersion, "Existing versions: 2, 1"),
        "unknown function": (1, ["fn", "nope"], UnknownFunction, "Functions that use the layer: fn, arm"),
        "not a user": (1, ["fn", "stranger"], UnknownFunction, "does not use layer lay"),
        "wrong arch": (1, ["fn", "arm"], IncompatibleConsumer, "runs python3.13 on arm64"),
    }[case]
    with pytest.raises(error, match=words):
        rollback("lay", number, layers=account, catalog=account, functions=account,
                 pointer=Pointer(account), consumers=consumers)
    assert account.updates == [] and account.pointers["lay"] == two
    assert one not in account.functions["fn"][0].layers


def test_repoint_plans_again_when_the_function_changed_under_it(account):
    account.publish("lay", 2)
    account.function("fn", arn("lay", 1))
    account.conflicts = 2
    result = repoint("fn", arn("lay", 2), account)
    assert result.status == "attached" and account.functions["fn"][0].layers == (arn("lay", 2),)
    assert repoint("fn", arn("lay", 2), account).status == "unchanged"


# -- sharing ---------------------------------------------------------------------------------

def test_share_is_one_statement_per_grantee_and_unshare_removes_it(account):
    account.publish("lay", 1)
    grant = Grant(account="210987654321")
    assert share("lay", 1, grant, account) == "granted"
    assert share("lay", 1, grant, account) == "unchanged"
    org = apply_sharing("lay", 1, [grant, Grant(organization="o-abcdefghij")], account)
    assert org == {"account 210987654321": "unchanged", "organization o-abcdefghij": "granted"}
    assert grantees(account.statements("lay", 1)) == [
        "account 210987654321 (layer-builder-210987654321)",
        "organization o-abcdefghij (layer-builder-o-abcdefghij)"]
    assert unshare("lay", 1, grant, account) == "revoked"
    with pytest.raises(InputError, match="shared with: organization o-abcdefghij"):
        unshare("lay", 1, grant, account)


def test_grantees_read_the_request_shape_moto_stores_too():
    assert grantees([{"Sid": "a", "Principal": "210987654321"},
                     {"Sid": "b", "Principal": "*", "OrganizationId": "o-abcdefghij"},
                     {"Sid": "c", "Principal": "*"}]) == [
        "account 210987654321 (a)", "organization o-abcdefghij (b)", "every AWS account (c)"]


@pytest.mark.parametrize("kwargs", [{}, {"account": "12"}, {"organization": "org-1"},
                                    {"account": "210987654321", "organization": "o-abcdefghij"}])
def test_a_grant_needs_exactly_one_valid_grantee(kwargs):
    with pytest.raises(InputError):
        Grant(**kwargs)


def test_sharing_an_unknown_version_names_the_existing_ones(account):
    account.publish("lay", 1)
    with pytest.raises(UnknownVersion, match="Existing versions: 1"):
        share("lay", 3, Grant(account="210987654321"), account)
    assert account.policies == {}
