from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ObjectKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBJECT_KIND_UNSPECIFIED: _ClassVar[ObjectKind]
    OBJECT_KIND_DICT: _ClassVar[ObjectKind]
    OBJECT_KIND_QUEUE: _ClassVar[ObjectKind]
    OBJECT_KIND_VOLUME: _ClassVar[ObjectKind]

class Backend(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKEND_UNSPECIFIED: _ClassVar[Backend]
    BACKEND_CONTAINER: _ClassVar[Backend]
    BACKEND_PROCESS: _ClassVar[Backend]

class AppState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APP_STATE_UNSPECIFIED: _ClassVar[AppState]
    APP_STATE_RUNNING: _ClassVar[AppState]
    APP_STATE_SUPERSEDED: _ClassVar[AppState]
    APP_STATE_STOPPED: _ClassVar[AppState]

class ContainerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTAINER_STATE_UNSPECIFIED: _ClassVar[ContainerState]
    CONTAINER_STATE_STARTING: _ClassVar[ContainerState]
    CONTAINER_STATE_READY: _ClassVar[ContainerState]
    CONTAINER_STATE_DISCONNECTED: _ClassVar[ContainerState]
OBJECT_KIND_UNSPECIFIED: ObjectKind
OBJECT_KIND_DICT: ObjectKind
OBJECT_KIND_QUEUE: ObjectKind
OBJECT_KIND_VOLUME: ObjectKind
BACKEND_UNSPECIFIED: Backend
BACKEND_CONTAINER: Backend
BACKEND_PROCESS: Backend
APP_STATE_UNSPECIFIED: AppState
APP_STATE_RUNNING: AppState
APP_STATE_SUPERSEDED: AppState
APP_STATE_STOPPED: AppState
CONTAINER_STATE_UNSPECIFIED: ContainerState
CONTAINER_STATE_STARTING: ContainerState
CONTAINER_STATE_READY: ContainerState
CONTAINER_STATE_DISCONNECTED: ContainerState

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Payload(_message.Message):
    __slots__ = ("data", "blob_id", "method")
    DATA_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    blob_id: str
    method: str
    def __init__(self, data: _Optional[bytes] = ..., blob_id: _Optional[str] = ..., method: _Optional[str] = ...) -> None: ...

class BlobChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class BlobRef(_message.Message):
    __slots__ = ("blob_id",)
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    blob_id: str
    def __init__(self, blob_id: _Optional[str] = ...) -> None: ...

class BlobExistsResponse(_message.Message):
    __slots__ = ("exists",)
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    exists: bool
    def __init__(self, exists: _Optional[bool] = ...) -> None: ...

class BlobUrlRequest(_message.Message):
    __slots__ = ("blob_id", "upload")
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    blob_id: str
    upload: bool
    def __init__(self, blob_id: _Optional[str] = ..., upload: _Optional[bool] = ...) -> None: ...

class BlobUrlResponse(_message.Message):
    __slots__ = ("url", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    URL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    url: str
    headers: _containers.ScalarMap[str, str]
    def __init__(self, url: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class AppCreateRequest(_message.Message):
    __slots__ = ("name", "deployed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEPLOYED_FIELD_NUMBER: _ClassVar[int]
    name: str
    deployed: bool
    def __init__(self, name: _Optional[str] = ..., deployed: _Optional[bool] = ...) -> None: ...

class AppCreateResponse(_message.Message):
    __slots__ = ("app_id", "heartbeat_interval", "unisolated_workers")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    UNISOLATED_WORKERS_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    heartbeat_interval: float
    unisolated_workers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, app_id: _Optional[str] = ..., heartbeat_interval: _Optional[float] = ..., unisolated_workers: _Optional[_Iterable[str]] = ...) -> None: ...

class AppRef(_message.Message):
    __slots__ = ("app_id", "name", "drain")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    name: str
    drain: bool
    def __init__(self, app_id: _Optional[str] = ..., name: _Optional[str] = ..., drain: _Optional[bool] = ...) -> None: ...

class AppDeployResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class AppInfo(_message.Message):
    __slots__ = ("app_id", "name", "state", "deployed", "version", "created_at", "num_functions", "stopped_at", "functions", "dashboard_url")
    class FunctionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DEPLOYED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NUM_FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    STOPPED_AT_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    DASHBOARD_URL_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    name: str
    state: AppState
    deployed: bool
    version: int
    created_at: float
    num_functions: int
    stopped_at: float
    functions: _containers.ScalarMap[str, str]
    dashboard_url: str
    def __init__(self, app_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[AppState, str]] = ..., deployed: _Optional[bool] = ..., version: _Optional[int] = ..., created_at: _Optional[float] = ..., num_functions: _Optional[int] = ..., stopped_at: _Optional[float] = ..., functions: _Optional[_Mapping[str, str]] = ..., dashboard_url: _Optional[str] = ...) -> None: ...

class AppListResponse(_message.Message):
    __slots__ = ("apps",)
    APPS_FIELD_NUMBER: _ClassVar[int]
    apps: _containers.RepeatedCompositeFieldContainer[AppInfo]
    def __init__(self, apps: _Optional[_Iterable[_Union[AppInfo, _Mapping]]] = ...) -> None: ...

class FunctionLookupRequest(_message.Message):
    __slots__ = ("app_name", "name", "function_id", "with_definition")
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    WITH_DEFINITION_FIELD_NUMBER: _ClassVar[int]
    app_name: str
    name: str
    function_id: str
    with_definition: bool
    def __init__(self, app_name: _Optional[str] = ..., name: _Optional[str] = ..., function_id: _Optional[str] = ..., with_definition: _Optional[bool] = ...) -> None: ...

class FunctionLookupResponse(_message.Message):
    __slots__ = ("function_id", "is_generator", "is_class", "methods", "web_url", "method_web_urls", "name", "app_id", "definition")
    class MethodsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    class MethodWebUrlsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    IS_GENERATOR_FIELD_NUMBER: _ClassVar[int]
    IS_CLASS_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    WEB_URL_FIELD_NUMBER: _ClassVar[int]
    METHOD_WEB_URLS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    function_id: str
    is_generator: bool
    is_class: bool
    methods: _containers.ScalarMap[str, bool]
    web_url: str
    method_web_urls: _containers.ScalarMap[str, str]
    name: str
    app_id: str
    definition: FunctionDefinition
    def __init__(self, function_id: _Optional[str] = ..., is_generator: _Optional[bool] = ..., is_class: _Optional[bool] = ..., methods: _Optional[_Mapping[str, bool]] = ..., web_url: _Optional[str] = ..., method_web_urls: _Optional[_Mapping[str, str]] = ..., name: _Optional[str] = ..., app_id: _Optional[str] = ..., definition: _Optional[_Union[FunctionDefinition, _Mapping]] = ...) -> None: ...

class FunctionBindRequest(_message.Message):
    __slots__ = ("function_id", "params", "options")
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    function_id: str
    params: bytes
    options: FunctionOptions
    def __init__(self, function_id: _Optional[str] = ..., params: _Optional[bytes] = ..., options: _Optional[_Union[FunctionOptions, _Mapping]] = ...) -> None: ...

class FunctionOptions(_message.Message):
    __slots__ = ("cpu", "memory_mb", "gpu", "timeout", "retries", "replace_secrets", "secret_ids", "replace_volumes", "volume_mounts", "scaledown_window", "min_containers", "max_containers", "max_inputs", "target_inputs", "batch_max_size", "batch_wait_ms", "buffer_containers", "read_only_volumes")
    class VolumeMountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    REPLACE_SECRETS_FIELD_NUMBER: _ClassVar[int]
    SECRET_IDS_FIELD_NUMBER: _ClassVar[int]
    REPLACE_VOLUMES_FIELD_NUMBER: _ClassVar[int]
    VOLUME_MOUNTS_FIELD_NUMBER: _ClassVar[int]
    SCALEDOWN_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MIN_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUTS_FIELD_NUMBER: _ClassVar[int]
    TARGET_INPUTS_FIELD_NUMBER: _ClassVar[int]
    BATCH_MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    BUFFER_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_VOLUMES_FIELD_NUMBER: _ClassVar[int]
    cpu: float
    memory_mb: int
    gpu: str
    timeout: float
    retries: RetryPolicy
    replace_secrets: bool
    secret_ids: _containers.RepeatedScalarFieldContainer[str]
    replace_volumes: bool
    volume_mounts: _containers.ScalarMap[str, str]
    scaledown_window: float
    min_containers: int
    max_containers: int
    max_inputs: int
    target_inputs: int
    batch_max_size: int
    batch_wait_ms: int
    buffer_containers: int
    read_only_volumes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cpu: _Optional[float] = ..., memory_mb: _Optional[int] = ..., gpu: _Optional[str] = ..., timeout: _Optional[float] = ..., retries: _Optional[_Union[RetryPolicy, _Mapping]] = ..., replace_secrets: _Optional[bool] = ..., secret_ids: _Optional[_Iterable[str]] = ..., replace_volumes: _Optional[bool] = ..., volume_mounts: _Optional[_Mapping[str, str]] = ..., scaledown_window: _Optional[float] = ..., min_containers: _Optional[int] = ..., max_containers: _Optional[int] = ..., max_inputs: _Optional[int] = ..., target_inputs: _Optional[int] = ..., batch_max_size: _Optional[int] = ..., batch_wait_ms: _Optional[int] = ..., buffer_containers: _Optional[int] = ..., read_only_volumes: _Optional[_Iterable[str]] = ...) -> None: ...

class FunctionRef(_message.Message):
    __slots__ = ("function_id",)
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    function_id: str
    def __init__(self, function_id: _Optional[str] = ...) -> None: ...

class FunctionStats(_message.Message):
    __slots__ = ("backlog", "num_running_inputs", "num_total_runners")
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    NUM_RUNNING_INPUTS_FIELD_NUMBER: _ClassVar[int]
    NUM_TOTAL_RUNNERS_FIELD_NUMBER: _ClassVar[int]
    backlog: int
    num_running_inputs: int
    num_total_runners: int
    def __init__(self, backlog: _Optional[int] = ..., num_running_inputs: _Optional[int] = ..., num_total_runners: _Optional[int] = ...) -> None: ...

class FunctionUpdateAutoscalerRequest(_message.Message):
    __slots__ = ("function_id", "min_containers", "max_containers", "scaledown_window", "buffer_containers")
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    SCALEDOWN_WINDOW_FIELD_NUMBER: _ClassVar[int]
    BUFFER_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    function_id: str
    min_containers: int
    max_containers: int
    scaledown_window: float
    buffer_containers: int
    def __init__(self, function_id: _Optional[str] = ..., min_containers: _Optional[int] = ..., max_containers: _Optional[int] = ..., scaledown_window: _Optional[float] = ..., buffer_containers: _Optional[int] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_retries", "backoff_coefficient", "initial_delay", "max_delay")
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    INITIAL_DELAY_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_FIELD_NUMBER: _ClassVar[int]
    max_retries: int
    backoff_coefficient: float
    initial_delay: float
    max_delay: float
    def __init__(self, max_retries: _Optional[int] = ..., backoff_coefficient: _Optional[float] = ..., initial_delay: _Optional[float] = ..., max_delay: _Optional[float] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("cpu", "memory_mb", "gpu", "cpu_limit", "memory_limit_mb", "ephemeral_disk_mb")
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    CPU_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_MB_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_DISK_MB_FIELD_NUMBER: _ClassVar[int]
    cpu: float
    memory_mb: int
    gpu: str
    cpu_limit: float
    memory_limit_mb: int
    ephemeral_disk_mb: int
    def __init__(self, cpu: _Optional[float] = ..., memory_mb: _Optional[int] = ..., gpu: _Optional[str] = ..., cpu_limit: _Optional[float] = ..., memory_limit_mb: _Optional[int] = ..., ephemeral_disk_mb: _Optional[int] = ...) -> None: ...

class FunctionDefinition(_message.Message):
    __slots__ = ("name", "module", "qualname", "code_blob_id", "pickled", "is_generator", "resources", "timeout", "retries", "max_containers", "min_containers", "scaledown_window", "image", "secret_ids", "volume_mounts", "read_only_volumes", "block_network", "is_class", "methods", "bound_params", "schedule", "web", "max_inputs", "web_methods", "env", "startup_timeout", "inputs_per_container", "buffer_containers", "regions", "restrict_access", "target_inputs", "batch_max_size", "batch_wait_ms", "derived_from", "sandbox", "cidr_allowlist", "enable_memory_snapshot")
    class VolumeMountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MethodsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    class WebMethodsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: WebEndpoint
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[WebEndpoint, _Mapping]] = ...) -> None: ...
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    QUALNAME_FIELD_NUMBER: _ClassVar[int]
    CODE_BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    PICKLED_FIELD_NUMBER: _ClassVar[int]
    IS_GENERATOR_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    MIN_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    SCALEDOWN_WINDOW_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SECRET_IDS_FIELD_NUMBER: _ClassVar[int]
    VOLUME_MOUNTS_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_VOLUMES_FIELD_NUMBER: _ClassVar[int]
    BLOCK_NETWORK_FIELD_NUMBER: _ClassVar[int]
    IS_CLASS_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    BOUND_PARAMS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    WEB_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUTS_FIELD_NUMBER: _ClassVar[int]
    WEB_METHODS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    STARTUP_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_PER_CONTAINER_FIELD_NUMBER: _ClassVar[int]
    BUFFER_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    RESTRICT_ACCESS_FIELD_NUMBER: _ClassVar[int]
    TARGET_INPUTS_FIELD_NUMBER: _ClassVar[int]
    BATCH_MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    DERIVED_FROM_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    CIDR_ALLOWLIST_FIELD_NUMBER: _ClassVar[int]
    ENABLE_MEMORY_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    name: str
    module: str
    qualname: str
    code_blob_id: str
    pickled: Payload
    is_generator: bool
    resources: Resources
    timeout: float
    retries: RetryPolicy
    max_containers: int
    min_containers: int
    scaledown_window: float
    image: Image
    secret_ids: _containers.RepeatedScalarFieldContainer[str]
    volume_mounts: _containers.ScalarMap[str, str]
    read_only_volumes: _containers.RepeatedScalarFieldContainer[str]
    block_network: bool
    is_class: bool
    methods: _containers.ScalarMap[str, bool]
    bound_params: bytes
    schedule: Schedule
    web: WebEndpoint
    max_inputs: int
    web_methods: _containers.MessageMap[str, WebEndpoint]
    env: _containers.ScalarMap[str, str]
    startup_timeout: float
    inputs_per_container: int
    buffer_containers: int
    regions: _containers.RepeatedScalarFieldContainer[str]
    restrict_access: bool
    target_inputs: int
    batch_max_size: int
    batch_wait_ms: int
    derived_from: str
    sandbox: bool
    cidr_allowlist: _containers.RepeatedScalarFieldContainer[str]
    enable_memory_snapshot: bool
    def __init__(self, name: _Optional[str] = ..., module: _Optional[str] = ..., qualname: _Optional[str] = ..., code_blob_id: _Optional[str] = ..., pickled: _Optional[_Union[Payload, _Mapping]] = ..., is_generator: _Optional[bool] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., timeout: _Optional[float] = ..., retries: _Optional[_Union[RetryPolicy, _Mapping]] = ..., max_containers: _Optional[int] = ..., min_containers: _Optional[int] = ..., scaledown_window: _Optional[float] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., secret_ids: _Optional[_Iterable[str]] = ..., volume_mounts: _Optional[_Mapping[str, str]] = ..., read_only_volumes: _Optional[_Iterable[str]] = ..., block_network: _Optional[bool] = ..., is_class: _Optional[bool] = ..., methods: _Optional[_Mapping[str, bool]] = ..., bound_params: _Optional[bytes] = ..., schedule: _Optional[_Union[Schedule, _Mapping]] = ..., web: _Optional[_Union[WebEndpoint, _Mapping]] = ..., max_inputs: _Optional[int] = ..., web_methods: _Optional[_Mapping[str, WebEndpoint]] = ..., env: _Optional[_Mapping[str, str]] = ..., startup_timeout: _Optional[float] = ..., inputs_per_container: _Optional[int] = ..., buffer_containers: _Optional[int] = ..., regions: _Optional[_Iterable[str]] = ..., restrict_access: _Optional[bool] = ..., target_inputs: _Optional[int] = ..., batch_max_size: _Optional[int] = ..., batch_wait_ms: _Optional[int] = ..., derived_from: _Optional[str] = ..., sandbox: _Optional[bool] = ..., cidr_allowlist: _Optional[_Iterable[str]] = ..., enable_memory_snapshot: _Optional[bool] = ...) -> None: ...

class WebEndpoint(_message.Message):
    __slots__ = ("kind", "method", "docs", "label", "requires_proxy_auth", "port", "startup_timeout")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[WebEndpoint.Kind]
        FASTAPI: _ClassVar[WebEndpoint.Kind]
        ASGI: _ClassVar[WebEndpoint.Kind]
        WSGI: _ClassVar[WebEndpoint.Kind]
        WEB_SERVER: _ClassVar[WebEndpoint.Kind]
    KIND_UNSPECIFIED: WebEndpoint.Kind
    FASTAPI: WebEndpoint.Kind
    ASGI: WebEndpoint.Kind
    WSGI: WebEndpoint.Kind
    WEB_SERVER: WebEndpoint.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DOCS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_PROXY_AUTH_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    STARTUP_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    kind: WebEndpoint.Kind
    method: str
    docs: bool
    label: str
    requires_proxy_auth: bool
    port: int
    startup_timeout: float
    def __init__(self, kind: _Optional[_Union[WebEndpoint.Kind, str]] = ..., method: _Optional[str] = ..., docs: _Optional[bool] = ..., label: _Optional[str] = ..., requires_proxy_auth: _Optional[bool] = ..., port: _Optional[int] = ..., startup_timeout: _Optional[float] = ...) -> None: ...

class ImageStep(_message.Message):
    __slots__ = ("kind", "args", "env", "path", "blob_id", "force_build", "layer_id", "secret_ids")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ImageStep.Kind]
        DEBIAN_SLIM: _ClassVar[ImageStep.Kind]
        FROM_REGISTRY: _ClassVar[ImageStep.Kind]
        PIP_INSTALL: _ClassVar[ImageStep.Kind]
        APT_INSTALL: _ClassVar[ImageStep.Kind]
        RUN_COMMANDS: _ClassVar[ImageStep.Kind]
        RUN_FUNCTION: _ClassVar[ImageStep.Kind]
        ADD_LOCAL: _ClassVar[ImageStep.Kind]
        ENV: _ClassVar[ImageStep.Kind]
        WORKDIR: _ClassVar[ImageStep.Kind]
        ENTRYPOINT: _ClassVar[ImageStep.Kind]
        SNAPSHOT: _ClassVar[ImageStep.Kind]
    KIND_UNSPECIFIED: ImageStep.Kind
    DEBIAN_SLIM: ImageStep.Kind
    FROM_REGISTRY: ImageStep.Kind
    PIP_INSTALL: ImageStep.Kind
    APT_INSTALL: ImageStep.Kind
    RUN_COMMANDS: ImageStep.Kind
    RUN_FUNCTION: ImageStep.Kind
    ADD_LOCAL: ImageStep.Kind
    ENV: ImageStep.Kind
    WORKDIR: ImageStep.Kind
    ENTRYPOINT: ImageStep.Kind
    SNAPSHOT: ImageStep.Kind
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_BUILD_FIELD_NUMBER: _ClassVar[int]
    LAYER_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_IDS_FIELD_NUMBER: _ClassVar[int]
    kind: ImageStep.Kind
    args: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    path: str
    blob_id: str
    force_build: bool
    layer_id: str
    secret_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[_Union[ImageStep.Kind, str]] = ..., args: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., path: _Optional[str] = ..., blob_id: _Optional[str] = ..., force_build: _Optional[bool] = ..., layer_id: _Optional[str] = ..., secret_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("image_id", "steps")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    steps: _containers.RepeatedCompositeFieldContainer[ImageStep]
    def __init__(self, image_id: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[ImageStep, _Mapping]]] = ...) -> None: ...

class Layer(_message.Message):
    __slots__ = ("layer_id", "blob_id", "size", "archive_size")
    LAYER_ID_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_SIZE_FIELD_NUMBER: _ClassVar[int]
    layer_id: str
    blob_id: str
    size: int
    archive_size: int
    def __init__(self, layer_id: _Optional[str] = ..., blob_id: _Optional[str] = ..., size: _Optional[int] = ..., archive_size: _Optional[int] = ...) -> None: ...

class ImageInfo(_message.Message):
    __slots__ = ("image_id", "functions", "layers", "size", "archive_size")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_SIZE_FIELD_NUMBER: _ClassVar[int]
    image_id: str
    functions: _containers.RepeatedScalarFieldContainer[str]
    layers: int
    size: int
    archive_size: int
    def __init__(self, image_id: _Optional[str] = ..., functions: _Optional[_Iterable[str]] = ..., layers: _Optional[int] = ..., size: _Optional[int] = ..., archive_size: _Optional[int] = ...) -> None: ...

class ImageListResponse(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[ImageInfo]
    def __init__(self, images: _Optional[_Iterable[_Union[ImageInfo, _Mapping]]] = ...) -> None: ...

class ImageBuildRequest(_message.Message):
    __slots__ = ("image", "force")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    image: Image
    force: bool
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., force: _Optional[bool] = ...) -> None: ...

class ImageBuildEvent(_message.Message):
    __slots__ = ("log", "done", "error", "step")
    LOG_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    log: str
    done: bool
    error: str
    step: BuildStep
    def __init__(self, log: _Optional[str] = ..., done: _Optional[bool] = ..., error: _Optional[str] = ..., step: _Optional[_Union[BuildStep, _Mapping]] = ...) -> None: ...

class BuildStep(_message.Message):
    __slots__ = ("index", "total", "state")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[BuildStep.State]
        BUILDING: _ClassVar[BuildStep.State]
        BUILT: _ClassVar[BuildStep.State]
        FETCHING: _ClassVar[BuildStep.State]
        FETCHED: _ClassVar[BuildStep.State]
        CACHED: _ClassVar[BuildStep.State]
    STATE_UNSPECIFIED: BuildStep.State
    BUILDING: BuildStep.State
    BUILT: BuildStep.State
    FETCHING: BuildStep.State
    FETCHED: BuildStep.State
    CACHED: BuildStep.State
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    index: int
    total: int
    state: BuildStep.State
    def __init__(self, index: _Optional[int] = ..., total: _Optional[int] = ..., state: _Optional[_Union[BuildStep.State, str]] = ...) -> None: ...

class Schedule(_message.Message):
    __slots__ = ("cron", "timezone", "period_seconds")
    CRON_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    cron: str
    timezone: str
    period_seconds: float
    def __init__(self, cron: _Optional[str] = ..., timezone: _Optional[str] = ..., period_seconds: _Optional[float] = ...) -> None: ...

class FunctionCreateRequest(_message.Message):
    __slots__ = ("app_id", "definition")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    definition: FunctionDefinition
    def __init__(self, app_id: _Optional[str] = ..., definition: _Optional[_Union[FunctionDefinition, _Mapping]] = ...) -> None: ...

class FunctionCreateResponse(_message.Message):
    __slots__ = ("function_id", "web_url", "method_web_urls")
    class MethodWebUrlsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    WEB_URL_FIELD_NUMBER: _ClassVar[int]
    METHOD_WEB_URLS_FIELD_NUMBER: _ClassVar[int]
    function_id: str
    web_url: str
    method_web_urls: _containers.ScalarMap[str, str]
    def __init__(self, function_id: _Optional[str] = ..., web_url: _Optional[str] = ..., method_web_urls: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Input(_message.Message):
    __slots__ = ("input_id", "call_id", "idx", "args", "attempt", "http")
    INPUT_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    IDX_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    input_id: str
    call_id: str
    idx: int
    args: Payload
    attempt: int
    http: HttpRequest
    def __init__(self, input_id: _Optional[str] = ..., call_id: _Optional[str] = ..., idx: _Optional[int] = ..., args: _Optional[_Union[Payload, _Mapping]] = ..., attempt: _Optional[int] = ..., http: _Optional[_Union[HttpRequest, _Mapping]] = ...) -> None: ...

class HttpHeader(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: bytes
    value: bytes
    def __init__(self, name: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class HttpRequest(_message.Message):
    __slots__ = ("type", "method", "path", "query_string", "headers", "scheme", "http_version", "root_path", "client_host", "client_port", "subprotocols", "body", "more_body", "endpoint")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    QUERY_STRING_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    HTTP_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROOT_PATH_FIELD_NUMBER: _ClassVar[int]
    CLIENT_HOST_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PORT_FIELD_NUMBER: _ClassVar[int]
    SUBPROTOCOLS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    MORE_BODY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    type: str
    method: str
    path: str
    query_string: bytes
    headers: _containers.RepeatedCompositeFieldContainer[HttpHeader]
    scheme: str
    http_version: str
    root_path: str
    client_host: str
    client_port: int
    subprotocols: _containers.RepeatedScalarFieldContainer[str]
    body: bytes
    more_body: bool
    endpoint: str
    def __init__(self, type: _Optional[str] = ..., method: _Optional[str] = ..., path: _Optional[str] = ..., query_string: _Optional[bytes] = ..., headers: _Optional[_Iterable[_Union[HttpHeader, _Mapping]]] = ..., scheme: _Optional[str] = ..., http_version: _Optional[str] = ..., root_path: _Optional[str] = ..., client_host: _Optional[str] = ..., client_port: _Optional[int] = ..., subprotocols: _Optional[_Iterable[str]] = ..., body: _Optional[bytes] = ..., more_body: _Optional[bool] = ..., endpoint: _Optional[str] = ...) -> None: ...

class HttpEvent(_message.Message):
    __slots__ = ("input_id", "type", "status", "headers", "body", "text", "is_text", "more_body", "code", "reason", "subprotocol")
    INPUT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IS_TEXT_FIELD_NUMBER: _ClassVar[int]
    MORE_BODY_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SUBPROTOCOL_FIELD_NUMBER: _ClassVar[int]
    input_id: str
    type: str
    status: int
    headers: _containers.RepeatedCompositeFieldContainer[HttpHeader]
    body: bytes
    text: str
    is_text: bool
    more_body: bool
    code: int
    reason: str
    subprotocol: str
    def __init__(self, input_id: _Optional[str] = ..., type: _Optional[str] = ..., status: _Optional[int] = ..., headers: _Optional[_Iterable[_Union[HttpHeader, _Mapping]]] = ..., body: _Optional[bytes] = ..., text: _Optional[str] = ..., is_text: _Optional[bool] = ..., more_body: _Optional[bool] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ..., subprotocol: _Optional[str] = ...) -> None: ...

class HttpEvents(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[HttpEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[HttpEvent, _Mapping]]] = ...) -> None: ...

class ProxyToken(_message.Message):
    __slots__ = ("token_id", "secret", "created_at")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    secret: str
    created_at: float
    def __init__(self, token_id: _Optional[str] = ..., secret: _Optional[str] = ..., created_at: _Optional[float] = ...) -> None: ...

class ProxyTokens(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[ProxyToken]
    def __init__(self, tokens: _Optional[_Iterable[_Union[ProxyToken, _Mapping]]] = ...) -> None: ...

class WorkspaceRequest(_message.Message):
    __slots__ = ("name", "max_containers", "max_cpu", "max_memory_mb", "max_gpus")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    MAX_CPU_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    MAX_GPUS_FIELD_NUMBER: _ClassVar[int]
    name: str
    max_containers: int
    max_cpu: float
    max_memory_mb: int
    max_gpus: int
    def __init__(self, name: _Optional[str] = ..., max_containers: _Optional[int] = ..., max_cpu: _Optional[float] = ..., max_memory_mb: _Optional[int] = ..., max_gpus: _Optional[int] = ...) -> None: ...

class WorkspaceInfo(_message.Message):
    __slots__ = ("name", "created_at", "max_containers", "max_cpu", "max_memory_mb", "max_gpus")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    MAX_CPU_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    MAX_GPUS_FIELD_NUMBER: _ClassVar[int]
    name: str
    created_at: float
    max_containers: int
    max_cpu: float
    max_memory_mb: int
    max_gpus: int
    def __init__(self, name: _Optional[str] = ..., created_at: _Optional[float] = ..., max_containers: _Optional[int] = ..., max_cpu: _Optional[float] = ..., max_memory_mb: _Optional[int] = ..., max_gpus: _Optional[int] = ...) -> None: ...

class WorkspaceListResponse(_message.Message):
    __slots__ = ("workspaces",)
    WORKSPACES_FIELD_NUMBER: _ClassVar[int]
    workspaces: _containers.RepeatedCompositeFieldContainer[WorkspaceInfo]
    def __init__(self, workspaces: _Optional[_Iterable[_Union[WorkspaceInfo, _Mapping]]] = ...) -> None: ...

class TokenCreateRequest(_message.Message):
    __slots__ = ("role", "workspace", "name", "expires_in", "max_cpu", "max_memory_mb")
    class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ROLE_UNSPECIFIED: _ClassVar[TokenCreateRequest.Role]
        ROLE_WORKSPACE: _ClassVar[TokenCreateRequest.Role]
        ROLE_ADMIN: _ClassVar[TokenCreateRequest.Role]
        ROLE_WORKER: _ClassVar[TokenCreateRequest.Role]
    ROLE_UNSPECIFIED: TokenCreateRequest.Role
    ROLE_WORKSPACE: TokenCreateRequest.Role
    ROLE_ADMIN: TokenCreateRequest.Role
    ROLE_WORKER: TokenCreateRequest.Role
    ROLE_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    MAX_CPU_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    role: TokenCreateRequest.Role
    workspace: str
    name: str
    expires_in: float
    max_cpu: float
    max_memory_mb: int
    def __init__(self, role: _Optional[_Union[TokenCreateRequest.Role, str]] = ..., workspace: _Optional[str] = ..., name: _Optional[str] = ..., expires_in: _Optional[float] = ..., max_cpu: _Optional[float] = ..., max_memory_mb: _Optional[int] = ...) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("token_id", "role", "workspace", "name", "created_at", "expires_at", "revoked_at")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    role: TokenCreateRequest.Role
    workspace: str
    name: str
    created_at: float
    expires_at: float
    revoked_at: float
    def __init__(self, token_id: _Optional[str] = ..., role: _Optional[_Union[TokenCreateRequest.Role, str]] = ..., workspace: _Optional[str] = ..., name: _Optional[str] = ..., created_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., revoked_at: _Optional[float] = ...) -> None: ...

class TokenCreateResponse(_message.Message):
    __slots__ = ("token", "token_secret")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_SECRET_FIELD_NUMBER: _ClassVar[int]
    token: TokenInfo
    token_secret: str
    def __init__(self, token: _Optional[_Union[TokenInfo, _Mapping]] = ..., token_secret: _Optional[str] = ...) -> None: ...

class TokenListResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class WorkerRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("worker_id", "name", "cpu", "memory_mb", "gpus", "connected", "draining", "num_containers", "backend", "cordoned_until", "cordon_reason", "labels", "provisioning")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    NUM_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    CORDONED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    CORDON_REASON_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PROVISIONING_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    name: str
    cpu: float
    memory_mb: int
    gpus: _containers.RepeatedScalarFieldContainer[str]
    connected: bool
    draining: bool
    num_containers: int
    backend: Backend
    cordoned_until: float
    cordon_reason: str
    labels: _containers.ScalarMap[str, str]
    provisioning: str
    def __init__(self, worker_id: _Optional[str] = ..., name: _Optional[str] = ..., cpu: _Optional[float] = ..., memory_mb: _Optional[int] = ..., gpus: _Optional[_Iterable[str]] = ..., connected: _Optional[bool] = ..., draining: _Optional[bool] = ..., num_containers: _Optional[int] = ..., backend: _Optional[_Union[Backend, str]] = ..., cordoned_until: _Optional[float] = ..., cordon_reason: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., provisioning: _Optional[str] = ...) -> None: ...

class WorkerListResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerInfo]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerInfo, _Mapping]]] = ...) -> None: ...

class UsageRequest(_message.Message):
    __slots__ = ("workspace", "since", "by")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    since: float
    by: str
    def __init__(self, workspace: _Optional[str] = ..., since: _Optional[float] = ..., by: _Optional[str] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("workspace", "app_name", "function_name", "cpu_seconds", "memory_gib_seconds", "gpu_seconds", "inputs")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GIB_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    app_name: str
    function_name: str
    cpu_seconds: float
    memory_gib_seconds: float
    gpu_seconds: float
    inputs: int
    def __init__(self, workspace: _Optional[str] = ..., app_name: _Optional[str] = ..., function_name: _Optional[str] = ..., cpu_seconds: _Optional[float] = ..., memory_gib_seconds: _Optional[float] = ..., gpu_seconds: _Optional[float] = ..., inputs: _Optional[int] = ...) -> None: ...

class UsageResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("input_id", "idx", "status", "data", "error", "traceback", "attempts", "args")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[Output.Status]
        SUCCESS: _ClassVar[Output.Status]
        FAILURE: _ClassVar[Output.Status]
        TIMEOUT: _ClassVar[Output.Status]
        CANCELLED: _ClassVar[Output.Status]
        CONTAINER_EXITED: _ClassVar[Output.Status]
        INIT_FAILURE: _ClassVar[Output.Status]
        GENERATOR_ITEM: _ClassVar[Output.Status]
        OUT_OF_MEMORY: _ClassVar[Output.Status]
    STATUS_UNSPECIFIED: Output.Status
    SUCCESS: Output.Status
    FAILURE: Output.Status
    TIMEOUT: Output.Status
    CANCELLED: Output.Status
    CONTAINER_EXITED: Output.Status
    INIT_FAILURE: Output.Status
    GENERATOR_ITEM: Output.Status
    OUT_OF_MEMORY: Output.Status
    INPUT_ID_FIELD_NUMBER: _ClassVar[int]
    IDX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    input_id: str
    idx: int
    status: Output.Status
    data: Payload
    error: str
    traceback: str
    attempts: _containers.RepeatedCompositeFieldContainer[FailedAttempt]
    args: Payload
    def __init__(self, input_id: _Optional[str] = ..., idx: _Optional[int] = ..., status: _Optional[_Union[Output.Status, str]] = ..., data: _Optional[_Union[Payload, _Mapping]] = ..., error: _Optional[str] = ..., traceback: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[FailedAttempt, _Mapping]]] = ..., args: _Optional[_Union[Payload, _Mapping]] = ...) -> None: ...

class FailedAttempt(_message.Message):
    __slots__ = ("attempt", "status", "error", "traceback", "container_id", "worker", "at")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    status: Output.Status
    error: str
    traceback: str
    container_id: str
    worker: str
    at: float
    def __init__(self, attempt: _Optional[int] = ..., status: _Optional[_Union[Output.Status, str]] = ..., error: _Optional[str] = ..., traceback: _Optional[str] = ..., container_id: _Optional[str] = ..., worker: _Optional[str] = ..., at: _Optional[float] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("call_id", "idx", "function_name", "attempts", "error", "status", "failed_at", "history")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    IDX_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FAILED_AT_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    idx: int
    function_name: str
    attempts: int
    error: str
    status: Output.Status
    failed_at: float
    history: _containers.RepeatedCompositeFieldContainer[FailedAttempt]
    def __init__(self, call_id: _Optional[str] = ..., idx: _Optional[int] = ..., function_name: _Optional[str] = ..., attempts: _Optional[int] = ..., error: _Optional[str] = ..., status: _Optional[_Union[Output.Status, str]] = ..., failed_at: _Optional[float] = ..., history: _Optional[_Iterable[_Union[FailedAttempt, _Mapping]]] = ...) -> None: ...

class AppFailuresResponse(_message.Message):
    __slots__ = ("failures",)
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    failures: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    def __init__(self, failures: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ...) -> None: ...

class FunctionCallRetryRequest(_message.Message):
    __slots__ = ("call_id", "idx")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    IDX_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    idx: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, call_id: _Optional[str] = ..., idx: _Optional[_Iterable[int]] = ...) -> None: ...

class FunctionCallRetryResponse(_message.Message):
    __slots__ = ("idx", "after_seq")
    IDX_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    idx: _containers.RepeatedScalarFieldContainer[int]
    after_seq: int
    def __init__(self, idx: _Optional[_Iterable[int]] = ..., after_seq: _Optional[int] = ...) -> None: ...

class CallOutput(_message.Message):
    __slots__ = ("seq", "output", "log_seq")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    LOG_SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    output: Output
    log_seq: int
    def __init__(self, seq: _Optional[int] = ..., output: _Optional[_Union[Output, _Mapping]] = ..., log_seq: _Optional[int] = ...) -> None: ...

class CallRequest(_message.Message):
    __slots__ = ("tag", "function_id", "call_id", "args", "resend")
    TAG_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    RESEND_FIELD_NUMBER: _ClassVar[int]
    tag: int
    function_id: str
    call_id: str
    args: Payload
    resend: bool
    def __init__(self, tag: _Optional[int] = ..., function_id: _Optional[str] = ..., call_id: _Optional[str] = ..., args: _Optional[_Union[Payload, _Mapping]] = ..., resend: _Optional[bool] = ...) -> None: ...

class CallResponse(_message.Message):
    __slots__ = ("tag", "output", "error", "disk_full")
    TAG_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DISK_FULL_FIELD_NUMBER: _ClassVar[int]
    tag: int
    output: CallOutput
    error: str
    disk_full: bool
    def __init__(self, tag: _Optional[int] = ..., output: _Optional[_Union[CallOutput, _Mapping]] = ..., error: _Optional[str] = ..., disk_full: _Optional[bool] = ...) -> None: ...

class FunctionCallCreateRequest(_message.Message):
    __slots__ = ("function_id", "call_id", "inputs", "inputs_complete")
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    function_id: str
    call_id: str
    inputs: _containers.RepeatedCompositeFieldContainer[Input]
    inputs_complete: bool
    def __init__(self, function_id: _Optional[str] = ..., call_id: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[Input, _Mapping]]] = ..., inputs_complete: _Optional[bool] = ...) -> None: ...

class FunctionCallCreateResponse(_message.Message):
    __slots__ = ("call_id",)
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    def __init__(self, call_id: _Optional[str] = ...) -> None: ...

class PutInputsRequest(_message.Message):
    __slots__ = ("call_id", "inputs", "inputs_complete")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    inputs: _containers.RepeatedCompositeFieldContainer[Input]
    inputs_complete: bool
    def __init__(self, call_id: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[Input, _Mapping]]] = ..., inputs_complete: _Optional[bool] = ...) -> None: ...

class GetOutputsRequest(_message.Message):
    __slots__ = ("call_id", "after_seq", "max_outputs", "timeout")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    after_seq: int
    max_outputs: int
    timeout: float
    def __init__(self, call_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., max_outputs: _Optional[int] = ..., timeout: _Optional[float] = ...) -> None: ...

class GetOutputsResponse(_message.Message):
    __slots__ = ("outputs", "function_id", "inputs_complete", "num_inputs", "num_done", "is_generator", "function_name")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    NUM_INPUTS_FIELD_NUMBER: _ClassVar[int]
    NUM_DONE_FIELD_NUMBER: _ClassVar[int]
    IS_GENERATOR_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedCompositeFieldContainer[CallOutput]
    function_id: str
    inputs_complete: bool
    num_inputs: int
    num_done: int
    is_generator: bool
    function_name: str
    def __init__(self, outputs: _Optional[_Iterable[_Union[CallOutput, _Mapping]]] = ..., function_id: _Optional[str] = ..., inputs_complete: _Optional[bool] = ..., num_inputs: _Optional[int] = ..., num_done: _Optional[int] = ..., is_generator: _Optional[bool] = ..., function_name: _Optional[str] = ...) -> None: ...

class MapRequest(_message.Message):
    __slots__ = ("tag", "resend", "create", "put", "get")
    TAG_FIELD_NUMBER: _ClassVar[int]
    RESEND_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    tag: int
    resend: bool
    create: FunctionCallCreateRequest
    put: PutInputsRequest
    get: GetOutputsRequest
    def __init__(self, tag: _Optional[int] = ..., resend: _Optional[bool] = ..., create: _Optional[_Union[FunctionCallCreateRequest, _Mapping]] = ..., put: _Optional[_Union[PutInputsRequest, _Mapping]] = ..., get: _Optional[_Union[GetOutputsRequest, _Mapping]] = ...) -> None: ...

class MapResponse(_message.Message):
    __slots__ = ("tag", "code", "details", "outputs")
    TAG_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    tag: int
    code: int
    details: str
    outputs: GetOutputsResponse
    def __init__(self, tag: _Optional[int] = ..., code: _Optional[int] = ..., details: _Optional[str] = ..., outputs: _Optional[_Union[GetOutputsResponse, _Mapping]] = ...) -> None: ...

class FunctionCallRef(_message.Message):
    __slots__ = ("call_id", "terminate_containers")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TERMINATE_CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    terminate_containers: bool
    def __init__(self, call_id: _Optional[str] = ..., terminate_containers: _Optional[bool] = ...) -> None: ...

class SecretCreateRequest(_message.Message):
    __slots__ = ("name", "env", "force", "merge")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    MERGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    env: _containers.ScalarMap[str, str]
    force: bool
    merge: bool
    def __init__(self, name: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., force: _Optional[bool] = ..., merge: _Optional[bool] = ...) -> None: ...

class SecretRef(_message.Message):
    __slots__ = ("secret_id", "name")
    SECRET_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    secret_id: str
    name: str
    def __init__(self, secret_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class SecretLookupRequest(_message.Message):
    __slots__ = ("name", "required_keys")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_KEYS_FIELD_NUMBER: _ClassVar[int]
    name: str
    required_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., required_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class SecretInfo(_message.Message):
    __slots__ = ("name", "created_at", "num_keys")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NUM_KEYS_FIELD_NUMBER: _ClassVar[int]
    name: str
    created_at: float
    num_keys: int
    def __init__(self, name: _Optional[str] = ..., created_at: _Optional[float] = ..., num_keys: _Optional[int] = ...) -> None: ...

class SecretListResponse(_message.Message):
    __slots__ = ("secrets",)
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    secrets: _containers.RepeatedCompositeFieldContainer[SecretInfo]
    def __init__(self, secrets: _Optional[_Iterable[_Union[SecretInfo, _Mapping]]] = ...) -> None: ...

class VolumeFile(_message.Message):
    __slots__ = ("path", "blob_id", "size", "mode", "mtime")
    PATH_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    path: str
    blob_id: str
    size: int
    mode: int
    mtime: float
    def __init__(self, path: _Optional[str] = ..., blob_id: _Optional[str] = ..., size: _Optional[int] = ..., mode: _Optional[int] = ..., mtime: _Optional[float] = ...) -> None: ...

class VolumeRef(_message.Message):
    __slots__ = ("volume_id",)
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    def __init__(self, volume_id: _Optional[str] = ...) -> None: ...

class VolumeManifest(_message.Message):
    __slots__ = ("volume_id", "version", "files")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    version: int
    files: _containers.RepeatedCompositeFieldContainer[VolumeFile]
    def __init__(self, volume_id: _Optional[str] = ..., version: _Optional[int] = ..., files: _Optional[_Iterable[_Union[VolumeFile, _Mapping]]] = ...) -> None: ...

class VolumeCommitRequest(_message.Message):
    __slots__ = ("volume_id", "files", "deleted")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    files: _containers.RepeatedCompositeFieldContainer[VolumeFile]
    deleted: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, volume_id: _Optional[str] = ..., files: _Optional[_Iterable[_Union[VolumeFile, _Mapping]]] = ..., deleted: _Optional[_Iterable[str]] = ...) -> None: ...

class VolumeMount(_message.Message):
    __slots__ = ("path", "manifest", "read_only")
    PATH_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    path: str
    manifest: VolumeManifest
    read_only: bool
    def __init__(self, path: _Optional[str] = ..., manifest: _Optional[_Union[VolumeManifest, _Mapping]] = ..., read_only: _Optional[bool] = ...) -> None: ...

class ObjectGetRequest(_message.Message):
    __slots__ = ("kind", "name", "create_if_missing", "ephemeral")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_IF_MISSING_FIELD_NUMBER: _ClassVar[int]
    EPHEMERAL_FIELD_NUMBER: _ClassVar[int]
    kind: ObjectKind
    name: str
    create_if_missing: bool
    ephemeral: bool
    def __init__(self, kind: _Optional[_Union[ObjectKind, str]] = ..., name: _Optional[str] = ..., create_if_missing: _Optional[bool] = ..., ephemeral: _Optional[bool] = ...) -> None: ...

class ObjectGetResponse(_message.Message):
    __slots__ = ("object_id",)
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    def __init__(self, object_id: _Optional[str] = ...) -> None: ...

class ObjectRef(_message.Message):
    __slots__ = ("kind", "name", "object_id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    kind: ObjectKind
    name: str
    object_id: str
    def __init__(self, kind: _Optional[_Union[ObjectKind, str]] = ..., name: _Optional[str] = ..., object_id: _Optional[str] = ...) -> None: ...

class ObjectInfo(_message.Message):
    __slots__ = ("name", "object_id", "created_at", "size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    object_id: str
    created_at: float
    size: int
    def __init__(self, name: _Optional[str] = ..., object_id: _Optional[str] = ..., created_at: _Optional[float] = ..., size: _Optional[int] = ...) -> None: ...

class ObjectListRequest(_message.Message):
    __slots__ = ("kind",)
    KIND_FIELD_NUMBER: _ClassVar[int]
    kind: ObjectKind
    def __init__(self, kind: _Optional[_Union[ObjectKind, str]] = ...) -> None: ...

class ObjectListResponse(_message.Message):
    __slots__ = ("objects",)
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    objects: _containers.RepeatedCompositeFieldContainer[ObjectInfo]
    def __init__(self, objects: _Optional[_Iterable[_Union[ObjectInfo, _Mapping]]] = ...) -> None: ...

class DictRequest(_message.Message):
    __slots__ = ("dict_id", "op", "keys", "values", "skip_if_exists")
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        GET: _ClassVar[DictRequest.Op]
        PUT: _ClassVar[DictRequest.Op]
        POP: _ClassVar[DictRequest.Op]
        CONTAINS: _ClassVar[DictRequest.Op]
        LEN: _ClassVar[DictRequest.Op]
        ITEMS: _ClassVar[DictRequest.Op]
        CLEAR: _ClassVar[DictRequest.Op]
    GET: DictRequest.Op
    PUT: DictRequest.Op
    POP: DictRequest.Op
    CONTAINS: DictRequest.Op
    LEN: DictRequest.Op
    ITEMS: DictRequest.Op
    CLEAR: DictRequest.Op
    DICT_ID_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SKIP_IF_EXISTS_FIELD_NUMBER: _ClassVar[int]
    dict_id: str
    op: DictRequest.Op
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    skip_if_exists: bool
    def __init__(self, dict_id: _Optional[str] = ..., op: _Optional[_Union[DictRequest.Op, str]] = ..., keys: _Optional[_Iterable[bytes]] = ..., values: _Optional[_Iterable[bytes]] = ..., skip_if_exists: _Optional[bool] = ...) -> None: ...

class DictResponse(_message.Message):
    __slots__ = ("found", "keys", "values", "count")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    found: bool
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    count: int
    def __init__(self, found: _Optional[bool] = ..., keys: _Optional[_Iterable[bytes]] = ..., values: _Optional[_Iterable[bytes]] = ..., count: _Optional[int] = ...) -> None: ...

class QueueRequest(_message.Message):
    __slots__ = ("queue_id", "op", "partition", "values", "n", "timeout", "total", "all", "after_seq")
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PUT: _ClassVar[QueueRequest.Op]
        GET: _ClassVar[QueueRequest.Op]
        LEN: _ClassVar[QueueRequest.Op]
        CLEAR: _ClassVar[QueueRequest.Op]
        PEEK: _ClassVar[QueueRequest.Op]
    PUT: QueueRequest.Op
    GET: QueueRequest.Op
    LEN: QueueRequest.Op
    CLEAR: QueueRequest.Op
    PEEK: QueueRequest.Op
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    queue_id: str
    op: QueueRequest.Op
    partition: str
    values: _containers.RepeatedScalarFieldContainer[bytes]
    n: int
    timeout: float
    total: bool
    all: bool
    after_seq: int
    def __init__(self, queue_id: _Optional[str] = ..., op: _Optional[_Union[QueueRequest.Op, str]] = ..., partition: _Optional[str] = ..., values: _Optional[_Iterable[bytes]] = ..., n: _Optional[int] = ..., timeout: _Optional[float] = ..., total: _Optional[bool] = ..., all: _Optional[bool] = ..., after_seq: _Optional[int] = ...) -> None: ...

class ObjectOp(_message.Message):
    __slots__ = ("tag", "dict", "queue")
    TAG_FIELD_NUMBER: _ClassVar[int]
    DICT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    tag: int
    dict: DictRequest
    queue: QueueRequest
    def __init__(self, tag: _Optional[int] = ..., dict: _Optional[_Union[DictRequest, _Mapping]] = ..., queue: _Optional[_Union[QueueRequest, _Mapping]] = ...) -> None: ...

class ObjectOpResult(_message.Message):
    __slots__ = ("tag", "dict", "queue", "error", "not_found", "disk_full")
    TAG_FIELD_NUMBER: _ClassVar[int]
    DICT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    DISK_FULL_FIELD_NUMBER: _ClassVar[int]
    tag: int
    dict: DictResponse
    queue: QueueResponse
    error: str
    not_found: bool
    disk_full: bool
    def __init__(self, tag: _Optional[int] = ..., dict: _Optional[_Union[DictResponse, _Mapping]] = ..., queue: _Optional[_Union[QueueResponse, _Mapping]] = ..., error: _Optional[str] = ..., not_found: _Optional[bool] = ..., disk_full: _Optional[bool] = ...) -> None: ...

class TransportEndpointResponse(_message.Message):
    __slots__ = ("port", "unix_path")
    PORT_FIELD_NUMBER: _ClassVar[int]
    UNIX_PATH_FIELD_NUMBER: _ClassVar[int]
    port: int
    unix_path: str
    def __init__(self, port: _Optional[int] = ..., unix_path: _Optional[str] = ...) -> None: ...

class TransportHello(_message.Message):
    __slots__ = ("method", "token_id", "token_secret")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_SECRET_FIELD_NUMBER: _ClassVar[int]
    method: str
    token_id: str
    token_secret: str
    def __init__(self, method: _Optional[str] = ..., token_id: _Optional[str] = ..., token_secret: _Optional[str] = ...) -> None: ...

class TransportStatus(_message.Message):
    __slots__ = ("code", "details")
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: int
    details: str
    def __init__(self, code: _Optional[int] = ..., details: _Optional[str] = ...) -> None: ...

class QueueResponse(_message.Message):
    __slots__ = ("values", "count", "last_seq")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    count: int
    last_seq: int
    def __init__(self, values: _Optional[_Iterable[bytes]] = ..., count: _Optional[int] = ..., last_seq: _Optional[int] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("seq", "container_id", "fd", "data", "function_name", "timestamp", "input_id", "call_id")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    INPUT_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    seq: int
    container_id: str
    fd: int
    data: str
    function_name: str
    timestamp: float
    input_id: str
    call_id: str
    def __init__(self, seq: _Optional[int] = ..., container_id: _Optional[str] = ..., fd: _Optional[int] = ..., data: _Optional[str] = ..., function_name: _Optional[str] = ..., timestamp: _Optional[float] = ..., input_id: _Optional[str] = ..., call_id: _Optional[str] = ...) -> None: ...

class LogBatch(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LogEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[LogEntry, _Mapping]]] = ...) -> None: ...

class AppLogsRequest(_message.Message):
    __slots__ = ("app_id", "after_seq", "app_name", "stop_at_end", "since", "until", "tail", "search", "function_name", "container_id", "call_id")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    STOP_AT_END_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    after_seq: int
    app_name: str
    stop_at_end: bool
    since: float
    until: float
    tail: int
    search: str
    function_name: str
    container_id: str
    call_id: str
    def __init__(self, app_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., app_name: _Optional[str] = ..., stop_at_end: _Optional[bool] = ..., since: _Optional[float] = ..., until: _Optional[float] = ..., tail: _Optional[int] = ..., search: _Optional[str] = ..., function_name: _Optional[str] = ..., container_id: _Optional[str] = ..., call_id: _Optional[str] = ...) -> None: ...

class WorkerRegister(_message.Message):
    __slots__ = ("worker_id", "boot_id", "name", "cpu", "memory_mb", "running_container_ids", "backend", "gpus", "backend_note", "own_network", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    RUNNING_CONTAINER_IDS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_NOTE_FIELD_NUMBER: _ClassVar[int]
    OWN_NETWORK_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    boot_id: str
    name: str
    cpu: float
    memory_mb: int
    running_container_ids: _containers.RepeatedScalarFieldContainer[str]
    backend: Backend
    gpus: _containers.RepeatedScalarFieldContainer[str]
    backend_note: str
    own_network: bool
    labels: _containers.ScalarMap[str, str]
    def __init__(self, worker_id: _Optional[str] = ..., boot_id: _Optional[str] = ..., name: _Optional[str] = ..., cpu: _Optional[float] = ..., memory_mb: _Optional[int] = ..., running_container_ids: _Optional[_Iterable[str]] = ..., backend: _Optional[_Union[Backend, str]] = ..., gpus: _Optional[_Iterable[str]] = ..., backend_note: _Optional[str] = ..., own_network: _Optional[bool] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ContainerExited(_message.Message):
    __slots__ = ("container_id", "cause", "exit_code", "reason", "log_tail", "cpu_seconds")
    class Cause(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CAUSE_UNSPECIFIED: _ClassVar[ContainerExited.Cause]
        EXITED: _ClassVar[ContainerExited.Cause]
        OUT_OF_MEMORY: _ClassVar[ContainerExited.Cause]
        START_FAILED: _ClassVar[ContainerExited.Cause]
        WORKER_ERROR: _ClassVar[ContainerExited.Cause]
    CAUSE_UNSPECIFIED: ContainerExited.Cause
    EXITED: ContainerExited.Cause
    OUT_OF_MEMORY: ContainerExited.Cause
    START_FAILED: ContainerExited.Cause
    WORKER_ERROR: ContainerExited.Cause
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LOG_TAIL_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    cause: ContainerExited.Cause
    exit_code: int
    reason: str
    log_tail: str
    cpu_seconds: float
    def __init__(self, container_id: _Optional[str] = ..., cause: _Optional[_Union[ContainerExited.Cause, str]] = ..., exit_code: _Optional[int] = ..., reason: _Optional[str] = ..., log_tail: _Optional[str] = ..., cpu_seconds: _Optional[float] = ...) -> None: ...

class ContainerUsage(_message.Message):
    __slots__ = ("containers",)
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    containers: _containers.RepeatedCompositeFieldContainer[ContainerCpu]
    def __init__(self, containers: _Optional[_Iterable[_Union[ContainerCpu, _Mapping]]] = ...) -> None: ...

class ContainerCpu(_message.Message):
    __slots__ = ("container_id", "cpu_seconds", "memory_bytes")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    cpu_seconds: float
    memory_bytes: int
    def __init__(self, container_id: _Optional[str] = ..., cpu_seconds: _Optional[float] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class WorkerMessage(_message.Message):
    __slots__ = ("register", "heartbeat", "container_exited", "build_log", "layer_built", "build_done", "usage", "exec_output", "snapshot_done")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_EXITED_FIELD_NUMBER: _ClassVar[int]
    BUILD_LOG_FIELD_NUMBER: _ClassVar[int]
    LAYER_BUILT_FIELD_NUMBER: _ClassVar[int]
    BUILD_DONE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    EXEC_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_DONE_FIELD_NUMBER: _ClassVar[int]
    register: WorkerRegister
    heartbeat: Empty
    container_exited: ContainerExited
    build_log: BuildLog
    layer_built: LayerBuilt
    build_done: BuildDone
    usage: ContainerUsage
    exec_output: ExecOutput
    snapshot_done: SnapshotDone
    def __init__(self, register: _Optional[_Union[WorkerRegister, _Mapping]] = ..., heartbeat: _Optional[_Union[Empty, _Mapping]] = ..., container_exited: _Optional[_Union[ContainerExited, _Mapping]] = ..., build_log: _Optional[_Union[BuildLog, _Mapping]] = ..., layer_built: _Optional[_Union[LayerBuilt, _Mapping]] = ..., build_done: _Optional[_Union[BuildDone, _Mapping]] = ..., usage: _Optional[_Union[ContainerUsage, _Mapping]] = ..., exec_output: _Optional[_Union[ExecOutput, _Mapping]] = ..., snapshot_done: _Optional[_Union[SnapshotDone, _Mapping]] = ...) -> None: ...

class SnapshotDone(_message.Message):
    __slots__ = ("snapshot_id", "layer", "error")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    layer: Layer
    error: str
    def __init__(self, snapshot_id: _Optional[str] = ..., layer: _Optional[_Union[Layer, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class BuildLog(_message.Message):
    __slots__ = ("build_id", "data", "step")
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    build_id: str
    data: str
    step: BuildStep
    def __init__(self, build_id: _Optional[str] = ..., data: _Optional[str] = ..., step: _Optional[_Union[BuildStep, _Mapping]] = ...) -> None: ...

class LayerBuilt(_message.Message):
    __slots__ = ("build_id", "layer")
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    build_id: str
    layer: Layer
    def __init__(self, build_id: _Optional[str] = ..., layer: _Optional[_Union[Layer, _Mapping]] = ...) -> None: ...

class BuildDone(_message.Message):
    __slots__ = ("build_id", "error")
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    build_id: str
    error: str
    def __init__(self, build_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class StartContainer(_message.Message):
    __slots__ = ("container_id", "function_id", "app_id", "resources", "image", "layers", "gpu_indices", "block_network", "volumes", "credential", "cidr_allowlist", "definition", "snapshot_init", "workspace")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    GPU_INDICES_FIELD_NUMBER: _ClassVar[int]
    BLOCK_NETWORK_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    CIDR_ALLOWLIST_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_INIT_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    function_id: str
    app_id: str
    resources: Resources
    image: Image
    layers: _containers.RepeatedCompositeFieldContainer[Layer]
    gpu_indices: _containers.RepeatedScalarFieldContainer[int]
    block_network: bool
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeMount]
    credential: str
    cidr_allowlist: _containers.RepeatedScalarFieldContainer[str]
    definition: FunctionDefinition
    snapshot_init: ContainerInit
    workspace: str
    def __init__(self, container_id: _Optional[str] = ..., function_id: _Optional[str] = ..., app_id: _Optional[str] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., layers: _Optional[_Iterable[_Union[Layer, _Mapping]]] = ..., gpu_indices: _Optional[_Iterable[int]] = ..., block_network: _Optional[bool] = ..., volumes: _Optional[_Iterable[_Union[VolumeMount, _Mapping]]] = ..., credential: _Optional[str] = ..., cidr_allowlist: _Optional[_Iterable[str]] = ..., definition: _Optional[_Union[FunctionDefinition, _Mapping]] = ..., snapshot_init: _Optional[_Union[ContainerInit, _Mapping]] = ..., workspace: _Optional[str] = ...) -> None: ...

class StopContainer(_message.Message):
    __slots__ = ("container_id", "kill")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    KILL_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    kill: bool
    def __init__(self, container_id: _Optional[str] = ..., kill: _Optional[bool] = ...) -> None: ...

class WorkerCommand(_message.Message):
    __slots__ = ("start_container", "stop_container", "registered", "build_image", "shutdown", "exec_start", "exec_input", "snapshot_container", "frames")
    START_CONTAINER_FIELD_NUMBER: _ClassVar[int]
    STOP_CONTAINER_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    BUILD_IMAGE_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    EXEC_START_FIELD_NUMBER: _ClassVar[int]
    EXEC_INPUT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_CONTAINER_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    start_container: StartContainer
    stop_container: StopContainer
    registered: Empty
    build_image: BuildImage
    shutdown: Empty
    exec_start: ExecStart
    exec_input: ExecInput
    snapshot_container: SnapshotContainer
    frames: TransportEndpointResponse
    def __init__(self, start_container: _Optional[_Union[StartContainer, _Mapping]] = ..., stop_container: _Optional[_Union[StopContainer, _Mapping]] = ..., registered: _Optional[_Union[Empty, _Mapping]] = ..., build_image: _Optional[_Union[BuildImage, _Mapping]] = ..., shutdown: _Optional[_Union[Empty, _Mapping]] = ..., exec_start: _Optional[_Union[ExecStart, _Mapping]] = ..., exec_input: _Optional[_Union[ExecInput, _Mapping]] = ..., snapshot_container: _Optional[_Union[SnapshotContainer, _Mapping]] = ..., frames: _Optional[_Union[TransportEndpointResponse, _Mapping]] = ...) -> None: ...

class SnapshotContainer(_message.Message):
    __slots__ = ("snapshot_id", "container_id", "parent_layer_id", "workspace")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_LAYER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    container_id: str
    parent_layer_id: str
    workspace: str
    def __init__(self, snapshot_id: _Optional[str] = ..., container_id: _Optional[str] = ..., parent_layer_id: _Optional[str] = ..., workspace: _Optional[str] = ...) -> None: ...

class BuildImage(_message.Message):
    __slots__ = ("build_id", "image", "layers", "force", "workspace", "secret_env")
    class SecretEnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: BuildSecretEnv
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[BuildSecretEnv, _Mapping]] = ...) -> None: ...
    BUILD_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    SECRET_ENV_FIELD_NUMBER: _ClassVar[int]
    build_id: str
    image: Image
    layers: _containers.RepeatedCompositeFieldContainer[Layer]
    force: bool
    workspace: str
    secret_env: _containers.MessageMap[int, BuildSecretEnv]
    def __init__(self, build_id: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., layers: _Optional[_Iterable[_Union[Layer, _Mapping]]] = ..., force: _Optional[bool] = ..., workspace: _Optional[str] = ..., secret_env: _Optional[_Mapping[int, BuildSecretEnv]] = ...) -> None: ...

class BuildSecretEnv(_message.Message):
    __slots__ = ("env",)
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENV_FIELD_NUMBER: _ClassVar[int]
    env: _containers.ScalarMap[str, str]
    def __init__(self, env: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ContainerHello(_message.Message):
    __slots__ = ("container_id", "held_input_ids", "resending")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    HELD_INPUT_IDS_FIELD_NUMBER: _ClassVar[int]
    RESENDING_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    held_input_ids: _containers.RepeatedScalarFieldContainer[str]
    resending: int
    def __init__(self, container_id: _Optional[str] = ..., held_input_ids: _Optional[_Iterable[str]] = ..., resending: _Optional[int] = ...) -> None: ...

class ContainerInitFailure(_message.Message):
    __slots__ = ("error", "traceback", "exception", "in_enter")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    EXCEPTION_FIELD_NUMBER: _ClassVar[int]
    IN_ENTER_FIELD_NUMBER: _ClassVar[int]
    error: str
    traceback: str
    exception: Payload
    in_enter: bool
    def __init__(self, error: _Optional[str] = ..., traceback: _Optional[str] = ..., exception: _Optional[_Union[Payload, _Mapping]] = ..., in_enter: _Optional[bool] = ...) -> None: ...

class ContainerMessage(_message.Message):
    __slots__ = ("hello", "want_inputs", "outputs", "logs", "heartbeat", "init_failure")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    WANT_INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    INIT_FAILURE_FIELD_NUMBER: _ClassVar[int]
    hello: ContainerHello
    want_inputs: int
    outputs: OutputBatch
    logs: LogBatch
    heartbeat: Empty
    init_failure: ContainerInitFailure
    def __init__(self, hello: _Optional[_Union[ContainerHello, _Mapping]] = ..., want_inputs: _Optional[int] = ..., outputs: _Optional[_Union[OutputBatch, _Mapping]] = ..., logs: _Optional[_Union[LogBatch, _Mapping]] = ..., heartbeat: _Optional[_Union[Empty, _Mapping]] = ..., init_failure: _Optional[_Union[ContainerInitFailure, _Mapping]] = ...) -> None: ...

class OutputBatch(_message.Message):
    __slots__ = ("outputs", "want_inputs", "http")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    WANT_INPUTS_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedCompositeFieldContainer[Output]
    want_inputs: int
    http: _containers.RepeatedCompositeFieldContainer[HttpEvent]
    def __init__(self, outputs: _Optional[_Iterable[_Union[Output, _Mapping]]] = ..., want_inputs: _Optional[int] = ..., http: _Optional[_Iterable[_Union[HttpEvent, _Mapping]]] = ...) -> None: ...

class ContainerInit(_message.Message):
    __slots__ = ("function_id", "app_id", "definition", "app_function_ids", "secret_env")
    class AppFunctionIdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class SecretEnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    APP_FUNCTION_IDS_FIELD_NUMBER: _ClassVar[int]
    SECRET_ENV_FIELD_NUMBER: _ClassVar[int]
    function_id: str
    app_id: str
    definition: FunctionDefinition
    app_function_ids: _containers.ScalarMap[str, str]
    secret_env: _containers.ScalarMap[str, str]
    def __init__(self, function_id: _Optional[str] = ..., app_id: _Optional[str] = ..., definition: _Optional[_Union[FunctionDefinition, _Mapping]] = ..., app_function_ids: _Optional[_Mapping[str, str]] = ..., secret_env: _Optional[_Mapping[str, str]] = ...) -> None: ...

class InputBatch(_message.Message):
    __slots__ = ("inputs",)
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[Input]
    def __init__(self, inputs: _Optional[_Iterable[_Union[Input, _Mapping]]] = ...) -> None: ...

class ContainerCommand(_message.Message):
    __slots__ = ("init", "inputs", "cancel_input_id", "stop", "http")
    INIT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_INPUT_ID_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    init: ContainerInit
    inputs: InputBatch
    cancel_input_id: str
    stop: Empty
    http: HttpEvents
    def __init__(self, init: _Optional[_Union[ContainerInit, _Mapping]] = ..., inputs: _Optional[_Union[InputBatch, _Mapping]] = ..., cancel_input_id: _Optional[str] = ..., stop: _Optional[_Union[Empty, _Mapping]] = ..., http: _Optional[_Union[HttpEvents, _Mapping]] = ...) -> None: ...

class ContainerListRequest(_message.Message):
    __slots__ = ("app_id", "app_name")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    app_name: str
    def __init__(self, app_id: _Optional[str] = ..., app_name: _Optional[str] = ...) -> None: ...

class ContainerInfo(_message.Message):
    __slots__ = ("container_id", "app_id", "app_name", "function_name", "worker", "image_id", "started_at", "state", "inputs_in_flight", "workspace", "stopping", "function_id")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_NAME_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INPUTS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    STOPPING_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    app_id: str
    app_name: str
    function_name: str
    worker: str
    image_id: str
    started_at: float
    state: ContainerState
    inputs_in_flight: int
    workspace: str
    stopping: bool
    function_id: str
    def __init__(self, container_id: _Optional[str] = ..., app_id: _Optional[str] = ..., app_name: _Optional[str] = ..., function_name: _Optional[str] = ..., worker: _Optional[str] = ..., image_id: _Optional[str] = ..., started_at: _Optional[float] = ..., state: _Optional[_Union[ContainerState, str]] = ..., inputs_in_flight: _Optional[int] = ..., workspace: _Optional[str] = ..., stopping: _Optional[bool] = ..., function_id: _Optional[str] = ...) -> None: ...

class ContainerListResponse(_message.Message):
    __slots__ = ("containers",)
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    containers: _containers.RepeatedCompositeFieldContainer[ContainerInfo]
    def __init__(self, containers: _Optional[_Iterable[_Union[ContainerInfo, _Mapping]]] = ...) -> None: ...

class ContainerRef(_message.Message):
    __slots__ = ("container_id",)
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    def __init__(self, container_id: _Optional[str] = ...) -> None: ...

class ExecStart(_message.Message):
    __slots__ = ("exec_id", "container_id", "argv", "tty", "rows", "cols", "workdir", "env", "secret_ids", "port")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    TTY_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    WORKDIR_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    SECRET_IDS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    exec_id: str
    container_id: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    tty: bool
    rows: int
    cols: int
    workdir: str
    env: _containers.ScalarMap[str, str]
    secret_ids: _containers.RepeatedScalarFieldContainer[str]
    port: int
    def __init__(self, exec_id: _Optional[str] = ..., container_id: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., tty: _Optional[bool] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ..., workdir: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., secret_ids: _Optional[_Iterable[str]] = ..., port: _Optional[int] = ...) -> None: ...

class ExecInput(_message.Message):
    __slots__ = ("exec_id", "data", "eof", "rows", "cols", "terminate")
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    TERMINATE_FIELD_NUMBER: _ClassVar[int]
    exec_id: str
    data: bytes
    eof: bool
    rows: int
    cols: int
    terminate: bool
    def __init__(self, exec_id: _Optional[str] = ..., data: _Optional[bytes] = ..., eof: _Optional[bool] = ..., rows: _Optional[int] = ..., cols: _Optional[int] = ..., terminate: _Optional[bool] = ...) -> None: ...

class ContainerExecRequest(_message.Message):
    __slots__ = ("start", "input")
    START_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    start: ExecStart
    input: ExecInput
    def __init__(self, start: _Optional[_Union[ExecStart, _Mapping]] = ..., input: _Optional[_Union[ExecInput, _Mapping]] = ...) -> None: ...

class ExecOutput(_message.Message):
    __slots__ = ("exec_id", "fd", "data", "exited", "exit_code", "error")
    EXEC_ID_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    exec_id: str
    fd: int
    data: bytes
    exited: bool
    exit_code: int
    error: str
    def __init__(self, exec_id: _Optional[str] = ..., fd: _Optional[int] = ..., data: _Optional[bytes] = ..., exited: _Optional[bool] = ..., exit_code: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class SandboxCreateRequest(_message.Message):
    __slots__ = ("app_id", "definition", "argv", "workdir", "timeout", "idle_timeout", "name", "encrypted_ports", "unencrypted_ports", "public_ports")
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    WORKDIR_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_PORTS_FIELD_NUMBER: _ClassVar[int]
    UNENCRYPTED_PORTS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_PORTS_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    definition: FunctionDefinition
    argv: _containers.RepeatedScalarFieldContainer[str]
    workdir: str
    timeout: float
    idle_timeout: float
    name: str
    encrypted_ports: _containers.RepeatedScalarFieldContainer[int]
    unencrypted_ports: _containers.RepeatedScalarFieldContainer[int]
    public_ports: bool
    def __init__(self, app_id: _Optional[str] = ..., definition: _Optional[_Union[FunctionDefinition, _Mapping]] = ..., argv: _Optional[_Iterable[str]] = ..., workdir: _Optional[str] = ..., timeout: _Optional[float] = ..., idle_timeout: _Optional[float] = ..., name: _Optional[str] = ..., encrypted_ports: _Optional[_Iterable[int]] = ..., unencrypted_ports: _Optional[_Iterable[int]] = ..., public_ports: _Optional[bool] = ...) -> None: ...

class SandboxTunnel(_message.Message):
    __slots__ = ("container_port", "url", "host", "port", "unencrypted", "public")
    CONTAINER_PORT_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    UNENCRYPTED_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_FIELD_NUMBER: _ClassVar[int]
    container_port: int
    url: str
    host: str
    port: int
    unencrypted: bool
    public: bool
    def __init__(self, container_port: _Optional[int] = ..., url: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., unencrypted: _Optional[bool] = ..., public: _Optional[bool] = ...) -> None: ...

class SandboxInfo(_message.Message):
    __slots__ = ("sandbox_id", "app_id", "app_name", "name", "container_id", "worker", "tags", "created_at", "state", "returncode", "error", "argv", "workspace", "tunnels")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[SandboxInfo.State]
        STARTING: _ClassVar[SandboxInfo.State]
        RUNNING: _ClassVar[SandboxInfo.State]
        ENDED: _ClassVar[SandboxInfo.State]
    STATE_UNSPECIFIED: SandboxInfo.State
    STARTING: SandboxInfo.State
    RUNNING: SandboxInfo.State
    ENDED: SandboxInfo.State
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RETURNCODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    TUNNELS_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    app_id: str
    app_name: str
    name: str
    container_id: str
    worker: str
    tags: _containers.ScalarMap[str, str]
    created_at: float
    state: SandboxInfo.State
    returncode: int
    error: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    workspace: str
    tunnels: _containers.RepeatedCompositeFieldContainer[SandboxTunnel]
    def __init__(self, sandbox_id: _Optional[str] = ..., app_id: _Optional[str] = ..., app_name: _Optional[str] = ..., name: _Optional[str] = ..., container_id: _Optional[str] = ..., worker: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., created_at: _Optional[float] = ..., state: _Optional[_Union[SandboxInfo.State, str]] = ..., returncode: _Optional[int] = ..., error: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., workspace: _Optional[str] = ..., tunnels: _Optional[_Iterable[_Union[SandboxTunnel, _Mapping]]] = ...) -> None: ...

class SandboxRef(_message.Message):
    __slots__ = ("sandbox_id",)
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    def __init__(self, sandbox_id: _Optional[str] = ...) -> None: ...

class SandboxGetRequest(_message.Message):
    __slots__ = ("sandbox_id", "app_name", "name")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    app_name: str
    name: str
    def __init__(self, sandbox_id: _Optional[str] = ..., app_name: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class SandboxListRequest(_message.Message):
    __slots__ = ("app_id", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    app_id: str
    tags: _containers.ScalarMap[str, str]
    def __init__(self, app_id: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SandboxListResponse(_message.Message):
    __slots__ = ("sandboxes",)
    SANDBOXES_FIELD_NUMBER: _ClassVar[int]
    sandboxes: _containers.RepeatedCompositeFieldContainer[SandboxInfo]
    def __init__(self, sandboxes: _Optional[_Iterable[_Union[SandboxInfo, _Mapping]]] = ...) -> None: ...

class SandboxWaitRequest(_message.Message):
    __slots__ = ("sandbox_id", "timeout", "until_running")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    UNTIL_RUNNING_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    timeout: float
    until_running: bool
    def __init__(self, sandbox_id: _Optional[str] = ..., timeout: _Optional[float] = ..., until_running: _Optional[bool] = ...) -> None: ...

class SandboxSetTagsRequest(_message.Message):
    __slots__ = ("sandbox_id", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    tags: _containers.ScalarMap[str, str]
    def __init__(self, sandbox_id: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SandboxOutputRequest(_message.Message):
    __slots__ = ("sandbox_id", "fd", "offset")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    FD_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    fd: int
    offset: int
    def __init__(self, sandbox_id: _Optional[str] = ..., fd: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class SandboxOutputChunk(_message.Message):
    __slots__ = ("data", "offset", "eof")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    eof: bool
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., eof: _Optional[bool] = ...) -> None: ...

class SandboxStdinRequest(_message.Message):
    __slots__ = ("sandbox_id", "data", "eof")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    data: bytes
    eof: bool
    def __init__(self, sandbox_id: _Optional[str] = ..., data: _Optional[bytes] = ..., eof: _Optional[bool] = ...) -> None: ...

class SandboxSnapshotRequest(_message.Message):
    __slots__ = ("sandbox_id", "timeout")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    timeout: float
    def __init__(self, sandbox_id: _Optional[str] = ..., timeout: _Optional[float] = ...) -> None: ...
