"""Turning API requests into sandbox jobs, and sandbox results into verdicts."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from codeprm.api.executor import (
    AssertTests,
    CallTests,
    CaseResult,
    EvaluateRequest,
    EvaluateResponse,
    Limits,
    RunRequest,
    RunResponse,
    StdioTests,
)
from codeprm.services.executor import verdicts, wire
from codeprm.services.executor.cache import VerdictCache
from codeprm.services.executor.pool import Pool
from codeprm.services.executor.settings import ExecutorSettings
from codeprm.serving.errors import BadInput, CodeprmError, PayloadTooLarge

log = logging.getLogger(__name__)


class ExecutorMetrics:
    def __init__(self, registry: CollectorRegistry, pool: Pool) -> None:
        self.executions = Counter(
            "executor_executions", "Sandbox executions by status", ["status"], registry=registry
        )
        self.latency = Histogram(
            "executor_execution_seconds",
            "Wall time of one sandbox execution",
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.cache = Counter(
            "executor_cache_lookups", "Verdict cache lookups", ["outcome"], registry=registry
        )
        Gauge(
            "executor_queue_depth", "Executions waiting for a worker", registry=registry
        ).set_function(lambda: pool.waiting)
        Gauge("executor_pool_size", "Sandbox workers", registry=registry).set_function(
            lambda: pool.size
        )
        Gauge(
            "executor_pool_busy", "Sandbox workers running a job", registry=registry
        ).set_function(lambda: pool.busy)


class Executor:
    def __init__(
        self,
        settings: ExecutorSettings,
        pool: Pool,
        metrics: ExecutorMetrics,
        cache: VerdictCache | None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.metrics = metrics
        self.cache = cache

    # -- requests -----------------------------------------------------------------------

    async def run(self, request: RunRequest) -> RunResponse:
        timeout_s, memory_mb = self._limits(request, request.code)
        job = self._job("program", request.code, timeout_s, memory_mb, stdin=request.stdin or "")
        try:
            return RunResponse.model_validate(await self._execute(job))
        except CodeprmError:
            raise
        except Exception:  # a bug of ours: logged, and the caller still gets a result
            log.exception("run failed; reported as a sandbox error")
            return RunResponse.model_validate(wire.sandbox_error("internal error while running"))

    def check(self, request: EvaluateRequest) -> tuple[float, int]:
        """Refuse a request that cannot be evaluated (BadInput, PayloadTooLarge) before
        anything runs (a batch checks all its items first); its effective limits."""
        limits = self._limits(request, request.code)
        tests = request.tests
        if not isinstance(tests, AssertTests) and len(tests.cases) > self.settings.max_cases:
            raise BadInput(f"at most {self.settings.max_cases} test cases per request")
        if isinstance(tests, CallTests):
            _encode_cases(tests)
        return limits

    async def evaluate(self, request: EvaluateRequest) -> EvaluateResponse:
        timeout_s, memory_mb = self.check(request)
        key = None
        if self.cache is not None:
            key = self.cache.key(request, timeout_s, memory_mb)
            cached = await self.cache.get(key)
            self.metrics.cache.labels("hit" if cached else "miss").inc()
            if cached is not None:
                return cached
        try:
            response = await self._evaluate(request, timeout_s, memory_mb)
        except CodeprmError:
            raise
        except Exception:  # a bug of ours: logged; one item never fails a whole batch
            log.exception("evaluation failed; reported as a sandbox error")
            failed = wire.sandbox_error("internal error while judging")
            return _response([_stdio_case(failed, "", None)], [failed])
        if self.cache is not None and key is not None:
            await self.cache.put(key, response)
        return response

    async def _evaluate(
        self, request: EvaluateRequest, timeout_s: float, memory_mb: int
    ) -> EvaluateResponse:
        tests = request.tests
        if isinstance(tests, AssertTests):
            return await self._assert(request.code, tests, timeout_s, memory_mb)
        if isinstance(tests, StdioTests):
            return await self._stdio(request, tests, timeout_s, memory_mb)
        return await self._call(request.code, tests, timeout_s, memory_mb)

    def _limits(self, limits: Limits, code: str) -> tuple[float, int]:
        s = self.settings
        if len(code.encode("utf-8", "surrogatepass")) > s.max_code_bytes:
            raise PayloadTooLarge(f"code is larger than {s.max_code_bytes} bytes")
        timeout_s = limits.timeout_s or s.default_timeout_s
        memory_mb = limits.memory_mb or s.default_memory_mb
        if timeout_s > s.max_timeout_s:
            raise BadInput(f"timeout_s must be at most {s.max_timeout_s}")
        if not s.min_memory_mb <= memory_mb <= s.max_memory_mb:
            raise BadInput(f"memory_mb must be between {s.min_memory_mb} and {s.max_memory_mb}")
        return timeout_s, memory_mb

    # -- the three kinds of tests -------------------------------------------------------

    async def _assert(
        self, code: str, tests: AssertTests, timeout_s: float, memory_mb: int
    ) -> EvaluateResponse:
        result = await self._execute(
            self._job(
                "assert",
                code,
                timeout_s,
                memory_mb,
                test_code=tests.code,
                entry_point=tests.entry_point,
            )
        )
        judge = result.get("judge")
        passed = result["status"] == "ok" and judge is not None and judge["completed"]
        error = None if passed else ((judge and judge["error"]) or _describe_status(result))
        case = CaseResult(
            passed=passed,
            status=result["status"],
            error=error,
            stdout=result["stdout"],
            stderr=result["stderr"],
            wall_time_s=result["wall_time_s"],
        )
        return _response([case], [result])

    async def _stdio(
        self, request: EvaluateRequest, tests: StdioTests, timeout_s: float, memory_mb: int
    ) -> EvaluateResponse:
        jobs = [
            self._job("program", request.code, timeout_s, memory_mb, stdin=case.stdin)
            for case in tests.cases
        ]
        results: list[wire.Result] = []
        cases: list[CaseResult] = []
        if request.stop_on_first_failure:
            for job, case in zip(jobs, tests.cases, strict=True):
                results.append(await self._execute(job))
                cases.append(await _stdio_verdict(results[-1], case.expected_stdout, tests))
                if not cases[-1].passed:
                    break
        else:
            results = list(await asyncio.gather(*(self._execute(job) for job in jobs)))
            cases = [
                await _stdio_verdict(r, c.expected_stdout, tests)
                for r, c in zip(results, tests.cases, strict=True)
            ]
        cases += [
            CaseResult(passed=False, status="ok", error="not run (stop_on_first_failure)")
            for _ in tests.cases[len(results) :]
        ]
        return _response(cases, results)

    async def _call(
        self, code: str, tests: CallTests, timeout_s: float, memory_mb: int
    ) -> EvaluateResponse:
        encoded = _encode_cases(tests)
        result = await self._execute(
            self._job(
                "call",
                code,
                timeout_s,
                memory_mb,
                entry_point=tests.entry_point,
                cases=encoded,
                float_tolerance=tests.float_tolerance,
            )
        )
        judge = result.get("judge")
        outcomes = judge["cases"] if judge is not None else {}
        cases = []
        for index in range(len(tests.cases)):
            outcome = outcomes.get(str(index))
            if outcome is None:
                status = result["status"] if result["status"] != "ok" else "runtime_error"
                error = (judge and judge["error"]) or _describe_status(result)
                cases.append(CaseResult(passed=False, status=status, error=error))
            elif "error" in outcome:
                cases.append(
                    CaseResult(passed=False, status="runtime_error", error=outcome["error"])
                )
            else:
                ok = bool(outcome["passed"])
                cases.append(
                    CaseResult(
                        passed=ok,
                        status="ok",
                        actual=outcome["actual"],
                        error=None if ok else "wrong answer",
                    )
                )
        return _response(cases, [result])

    # -- plumbing -----------------------------------------------------------------------

    def _job(
        self,
        mode: wire.Mode,
        code: str,
        timeout_s: float,
        memory_mb: int,
        *,
        stdin: str = "",
        test_code: str | None = None,
        entry_point: str | None = None,
        cases: list[list[Any]] | None = None,
        float_tolerance: float = 0.0,
    ) -> wire.Job:
        s = self.settings
        limits: wire.Limits = {
            "cpu_s": timeout_s,
            "memory_mb": memory_mb,
            "nproc": s.nproc,
            "fsize_mb": s.fsize_mb,
            "nofile": s.nofile,
        }
        # A call's answer is output too: capped like a stream.
        judge: wire.JudgeJob = {"reply_limit_bytes": s.output_limit_bytes}
        if test_code is not None:
            judge["test_code"] = test_code
        program: wire.ProgramJob = {"mode": mode, "code": code, "memory_mb": memory_mb}
        if entry_point is not None:
            judge["entry_point"] = entry_point
            program["entry_point"] = entry_point
        if cases is not None:
            judge["cases"] = cases
            judge["float_tolerance"] = float_tolerance
        return {
            "mode": mode,
            "limits": limits,
            "timeout_s": timeout_s,
            "stdin": stdin,
            "output_limit_bytes": s.output_limit_bytes,
            # Sent to the worker as raw frames it forwards without decoding (`wire.encode_job`).
            "program": program,
            "judge": judge,
        }

    async def _execute(self, job: wire.Job) -> wire.Result:
        result = await self.pool.execute(job)
        self.metrics.executions.labels(result["status"]).inc()
        self.metrics.latency.observe(result["wall_time_s"])
        return result


def _encode_cases(tests: CallTests) -> list[list[Any]]:
    # The judge compares the results with `expected` itself (`runner.judge_calls`): what a
    # program returned is never decoded in the service.
    try:
        for case in tests.cases:  # nested beyond what the judge compares: refused here
            wire.encode_plain(case.expected)
        return [
            [wire.encode_plain(c.args), wire.encode_plain(c.kwargs), c.expected]
            for c in tests.cases
        ]
    except wire.NotPlainData as exc:
        raise BadInput(f"a test case: {exc}") from None


# Outputs beyond this are compared in a thread: the comparison is Python work per token
# (about 7 µs for a float), and a 1 MiB output would hold the event loop for most of a second.
_COMPARE_INLINE_BYTES = 64 << 10


async def _stdio_verdict(result: wire.Result, expected: str, tests: StdioTests) -> CaseResult:
    if len(result["stdout"]) + len(expected) > _COMPARE_INLINE_BYTES:
        return await asyncio.to_thread(_stdio_case, result, expected, tests)
    return _stdio_case(result, expected, tests)


def _stdio_case(result: wire.Result, expected: str, tests: StdioTests | None) -> CaseResult:
    status = result["status"]
    if status != "ok" or tests is None:
        return CaseResult(
            passed=False,
            status=status,
            error=_describe_status(result),
            stdout=result["stdout"],
            stderr=result["stderr"],
            wall_time_s=result["wall_time_s"],
        )
    reason = verdicts.compare_stdout(
        result["stdout"], expected, tests.compare, tests.float_tolerance
    )
    return CaseResult(
        passed=reason is None,
        status="ok",
        error=reason,
        stdout=result["stdout"],
        stderr=result["stderr"],
        actual=result["stdout"],
        wall_time_s=result["wall_time_s"],
    )


def _describe_status(result: wire.Result) -> str:
    status = result["status"]
    if status == "runtime_error":
        tail = result["stderr"].strip().rsplit("\n", 1)[-1] if result["stderr"].strip() else ""
        return tail or f"exit code {result.get('exit_code')}"
    return {
        "timeout": "time limit exceeded",
        "memory_limit": "memory limit exceeded",
        "output_limit": "output limit exceeded",
        "sandbox_error": "sandbox error",
        "ok": "failed",
    }[status]


def _response(cases: list[CaseResult], results: list[wire.Result]) -> EvaluateResponse:
    passed_count = sum(c.passed for c in cases)
    status = next((c.status for c in cases if c.status != "ok"), "ok")
    return EvaluateResponse(
        passed=passed_count == len(cases),
        pass_rate=passed_count / len(cases),
        status=status,
        cases=cases,
        wall_time_s=sum(r["wall_time_s"] for r in results),
        cpu_time_s=sum(r["cpu_time_s"] for r in results),
        peak_memory_mb=max((r["peak_memory_mb"] for r in results), default=0.0),
    )
