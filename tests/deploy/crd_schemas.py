"""Small JSON schemas for the custom resources in deploy/k8s, written for these tests.

kubernetes-validate carries only the built-in kinds, and no PyPI package carries KEDA's or the Prometheus
Operator's CRDs. These schemas hold the fields of the CRD versions named below (KEDA 2.x docs, Prometheus
Operator monitoring.coreos.com/v1), closed with additionalProperties: false so that a misspelt field
fails; a field not listed here needs adding. They check structure, not what the operators accept."""

from __future__ import annotations

from typing import Any


def closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


OBJECT: dict[str, Any] = {"type": "object"}
STRINGS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
NAME_REF = closed({"name": {"type": "string"}, "kind": {"type": "string"}}, ("name",))
METADATA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "labels": STRINGS,
                                                                   "annotations": STRINGS}}


def resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return closed({"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": METADATA,
                   "spec": spec}, ("apiVersion", "kind", "metadata", "spec"))


# KEDA's rabbitmq trigger: metadata is map[string]string (a bare number fails at admission).
RABBITMQ_METADATA = closed({
    "host": {"type": "string"}, "hostFromEnv": {"type": "string"},
    "usernameFromEnv": {"type": "string"}, "passwordFromEnv": {"type": "string"},
    "protocol": {"enum": ["auto", "amqp", "http"]},
    "mode": {"enum": ["QueueLength", "MessageRate", "DeliverGetRate", "PublishedToDeliveredRatio",
                      "ExpectedQueueConsumptionTime"]},
    "value": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
    "activationValue": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
    "queueName": {"type": "string"}, "vhostName": {"type": "string"},
    "useRegex": {"enum": ["true", "false"]}, "excludeUnacknowledged": {"enum": ["true", "false"]},
    "operation": {"enum": ["sum", "max", "avg"]}, "pageSize": {"type": "string"},
    "unsafeSsl": {"enum": ["true", "false"]}, "timeout": {"type": "string"},
}, ("mode", "value", "queueName"))

SCALED_OBJECT = resource("keda.sh/v1alpha1", "ScaledObject", closed({
    "scaleTargetRef": closed({"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                              "name": {"type": "string"}, "envSourceContainerName": {"type": "string"}}, ("name",)),
    "pollingInterval": {"type": "integer", "minimum": 1},
    "cooldownPeriod": {"type": "integer", "minimum": 0},
    "initialCooldownPeriod": {"type": "integer", "minimum": 0},
    "idleReplicaCount": {"type": "integer", "minimum": 0},
    "minReplicaCount": {"type": "integer", "minimum": 0},
    "maxReplicaCount": {"type": "integer", "minimum": 1},
    "fallback": closed({"failureThreshold": {"type": "integer"}, "replicas": {"type": "integer"}}),
    "advanced": closed({
        "restoreToOriginalReplicaCount": {"type": "boolean"},
        "horizontalPodAutoscalerConfig": closed({"name": {"type": "string"}, "behavior": OBJECT}),
        "scalingModifiers": OBJECT,
    }),
    "triggers": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
        "properties": {"type": {"type": "string"}, "name": {"type": "string"}, "metadata": STRINGS,
                       "authenticationRef": NAME_REF, "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                       "useCachedMetrics": {"type": "boolean"}},
        "if": {"properties": {"type": {"const": "rabbitmq"}}}, "then": {"properties": {"metadata": RABBITMQ_METADATA}},
    }},
}, ("scaleTargetRef", "triggers")))

TRIGGER_AUTHENTICATION = resource("keda.sh/v1alpha1", "TriggerAuthentication", closed({
    "secretTargetRef": {"type": "array", "items": closed(
        {"parameter": {"type": "string"}, "name": {"type": "string"}, "key": {"type": "string"}},
        ("parameter", "name", "key"))},
    "configMapTargetRef": {"type": "array"}, "env": {"type": "array"}, "podIdentity": OBJECT,
    "hashiCorpVault": OBJECT, "azureKeyVault": OBJECT, "gcpSecretManager": OBJECT, "awsSecretManager": OBJECT,
    "boundServiceAccountToken": {"type": "array"},
}))

RELABELING = closed({
    "sourceLabels": {"type": "array", "items": {"type": "string"}}, "separator": {"type": "string"},
    "targetLabel": {"type": "string"}, "regex": {"type": "string"}, "modulus": {"type": "integer"},
    "replacement": {"type": "string"},
    "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod", "labelmap",
                        "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep", "lowercase", "Lowercase",
                        "uppercase", "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"]},
})
POD_MONITOR = resource("monitoring.coreos.com/v1", "PodMonitor", closed({
    "selector": OBJECT, "namespaceSelector": OBJECT, "jobLabel": {"type": "string"},
    "podTargetLabels": {"type": "array", "items": {"type": "string"}},
    "sampleLimit": {"type": "integer"}, "targetLimit": {"type": "integer"}, "attachMetadata": OBJECT,
    "podMetricsEndpoints": {"type": "array", "items": closed({
        "port": {"type": "string"}, "portNumber": {"type": "integer"}, "path": {"type": "string"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]}, "interval": {"type": "string"},
        "scrapeTimeout": {"type": "string"}, "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"}, "params": OBJECT, "tlsConfig": OBJECT, "basicAuth": OBJECT,
        "authorization": OBJECT, "bearerTokenSecret": OBJECT,
        "relabelings": {"type": "array", "items": RELABELING},
        "metricRelabelings": {"type": "array", "items": RELABELING},
    })},
}, ("selector",)))

SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
           ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
           ("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR}
