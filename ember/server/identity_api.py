"""The identity RPCs of the client service: workspaces and their quotas, tokens, workers, and
usage. Which of them a caller may make is auth.py's to say (an admin, mostly)."""

import time

import grpc

from ..proto import api_pb2
from .auth import ADMIN, WORKER, WORKSPACE

EMPTY = api_pb2.Empty()
Role = api_pb2.TokenCreateRequest.Role
ROLES = {ADMIN: Role.ROLE_ADMIN, WORKSPACE: Role.ROLE_WORKSPACE, WORKER: Role.ROLE_WORKER}
ROLE_NAMES = {v: k for k, v in ROLES.items()}


class IdentityRpcs:
    """Part of ClientService (api.py), whose `_call`, `identity`, `fleet` and `sched` it uses."""

    async def WorkspaceCreate(self, req, context, who):
        return _workspace_info(await self._call(context, self.identity.create_workspace, who, req.name))

    async def WorkspaceList(self, req, context, who):
        workspaces = await self._call(context, self.identity.list_workspaces, who)
        return api_pb2.WorkspaceListResponse(workspaces=[_workspace_info(w) for w in workspaces])

    async def WorkspaceSet(self, req, context, who):
        return _workspace_info(await self._call(
            context, self.identity.set_limits, who, req.name, max_containers=req.max_containers or None,
            max_cpu=req.max_cpu or None, max_memory_mb=req.max_memory_mb or None, max_gpus=req.max_gpus or None))

    async def TokenCreate(self, req, context, who):
        role = ROLE_NAMES.get(req.role or Role.ROLE_WORKSPACE)
        if role is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"TokenCreateRequest.role: unknown role {req.role}")
        token, secret = await self._call(
            context, self.identity.new_token, who, role=role, workspace=req.workspace, name=req.name,
            expires_in=req.expires_in, max_cpu=req.max_cpu, max_memory_mb=req.max_memory_mb)
        return api_pb2.TokenCreateResponse(token=_token_info(token), token_secret=secret)

    async def TokenList(self, req, context, who):
        tokens = await self._call(context, self.identity.list_tokens, who)
        return api_pb2.TokenListResponse(tokens=[_token_info(t) for t in tokens])

    async def TokenRevoke(self, req, context, who):
        await self._call(context, self.identity.revoke, who, req.token_id)
        return EMPTY

    async def WorkerList(self, req, context, who):
        await self._call(context, self.identity.require_admin, who, "list workers")
        now, wall = self.fleet.clock(), time.time()
        prov = self.sched.provisioner
        workers = [api_pb2.WorkerInfo(
            worker_id=w.worker_id, name=w.name, cpu=w.cpu, memory_mb=w.memory_mb, gpus=w.gpus.kinds,
            connected=w.connected, draining=w.draining, num_containers=len(w.containers), backend=w.backend,
            cordoned_until=wall + w.cordoned_until - now if w.cordoned(now) else 0,
            cordon_reason=w.cordon_reason if w.cordoned(now) else "", labels=w.labels,
            provisioning=prov.describe(w.name) if prov else "")
            for w in self.fleet.workers()]
        if prov:  # the workers it asked for that have not connected, and those that failed to start
            workers += [api_pb2.WorkerInfo(name=name, cpu=shape.cpu, memory_mb=shape.memory_mb, provisioning=state)
                        for name, shape, state in prov.not_connected()]
        return api_pb2.WorkerListResponse(workers=workers)

    async def WorkerDrain(self, req, context, who):
        await self._call(context, self.identity.require_admin, who, "drain workers")
        await self._call(context, self.fleet.drain, req.name)
        return EMPTY

    async def WorkerRemove(self, req, context, who):
        await self._call(context, self.identity.require_admin, who, "remove workers")
        await self._call(context, self.fleet.remove, req.name)
        return EMPTY

    async def UsageGet(self, req, context, who):
        workspace = req.workspace or (None if who.is_admin else who.workspace)
        if workspace != who.workspace:
            await self._call(context, self.identity.require_admin, who, "see another workspace's usage")
        if workspace is not None and self.identity.workspace(workspace) is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"there is no workspace {workspace!r} "
                                "(see `ember workspace list`)")
        rows = await self._call(context, self.sched.usage.report, workspace, req.since, req.by)
        return api_pb2.UsageResponse(rows=[api_pb2.UsageRow(
            workspace=ws, app_name=app, function_name=fn, cpu_seconds=cpu, memory_gib_seconds=mem, gpu_seconds=gpu,
            inputs=inputs) for ws, app, fn, cpu, mem, gpu, inputs in rows])


def _workspace_info(w) -> api_pb2.WorkspaceInfo:
    return api_pb2.WorkspaceInfo(name=w.name, created_at=w.created_at, max_containers=w.max_containers or 0,
                                 max_cpu=w.max_cpu or 0, max_memory_mb=w.max_memory_mb or 0, max_gpus=w.max_gpus or 0)


def _token_info(t) -> api_pb2.TokenInfo:
    return api_pb2.TokenInfo(token_id=t.token_id, role=ROLES[t.role], workspace=t.workspace, name=t.name,
                             created_at=t.created_at, expires_at=t.expires_at or 0, revoked_at=t.revoked_at or 0)
