"""Many abusive jobs at once while containers are scrubbed, killed and replaced; then all is normal."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

from tests.security.conftest import CURRENT, Target
from tests.security.test_resources import FORK_BOMBS, MEMORY_BOMBS

SHORT = {"timeout_s": 2}
C_FLOOD = '#include <stdio.h>\nint main(void) { for (;;) fputs("flood flood flood flood\\n", stdout); }\n'
JS_FLOOD = 'const fs = require("fs");\nconst s = "j".repeat(65536);\nfor (;;) fs.writeSync(1, s);\n'
LIMIT_STATUSES = {"timed_out", "memory_exceeded", "output_exceeded", "completed"}

STORM: list[tuple[str, str, str, dict[str, Any] | None]] = (
    [("fork bomb", "c", FORK_BOMBS["c"], SHORT)] * 8
    + [("fork bomb", "bash", FORK_BOMBS["bash"], SHORT)] * 2
    + [("memory bomb", "c", MEMORY_BOMBS["c"], None)] * 3
    + [("memory bomb", "javascript", MEMORY_BOMBS["javascript"], None)]
    + [("flood", "c", C_FLOOD, None)] * 2
    + [("flood", "javascript", JS_FLOOD, None)] * 2
    + [("endless loop", "python", "while True:\n    pass\n", SHORT)] * 2
)
EXPECTED = {
    "fork bomb": {"timed_out", "memory_exceeded", "completed"},
    "memory bomb": {"memory_exceeded"},
    "flood": {"output_exceeded"},
    "endless loop": {"timed_out"},
}


def test_abuse_storm_then_normal_service(target: Target) -> None:
    t = target

    def run(job: tuple[str, str, str, dict[str, Any] | None]) -> tuple[str, dict[str, Any]]:
        kind, language, source, limits = job
        CURRENT.attack = f"storm: {kind} ({language})"
        return kind, t.run(language, source, limits=limits, timeout=300)

    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(STORM)) as pool:
        outcomes = list(pool.map(run, STORM))
    took = time.monotonic() - began
    for kind, state in outcomes:
        assert state["status"] in EXPECTED[kind], (kind, t.explain(state))
    # The storm is over: every language answers normally, side by side, and the service is ready.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(t.normal_job_works, ["c", "bash", "javascript", "python"]))
    t.healthy()
    # Nothing of the storm runs on: a job sees only itself and the agent.
    state = t.run("c", """
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(void) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    while ((e = readdir(d)))
        if (isdigit((unsigned char)e->d_name[0]) && atoi(e->d_name) != 1 && atoi(e->d_name) != getpid())
            printf("left %s\\n", e->d_name);
    puts("listed");
    return 0;
}
""")
    assert state["status"] == "completed" and state["result"]["stdout"] == "listed\n", t.explain(state)
    assert took < 240, f"the storm took {took:.0f}s"
