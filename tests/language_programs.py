"""The test programs of every language (the same for each of its versions), for tests/test_languages.py.

Each language has a hello world, a program that echoes its arguments and first stdin line, a
program of several files, one that fails at run time, and, if compiled, one that does not
compile. ``multi`` may be empty where a language has no notion of a second source file a
client could send (the test of several files is then not generated for it, by name).
"""

from __future__ import annotations

from dataclasses import dataclass

HELLO = "hello, world\n"
STDIN = "first line\nsecond line\n"
ARGS = ["a", "b c"]
ECHOED = "args=a|b c\nline=first line\n"
GREETED = "hello, runbox\n"


@dataclass
class Programs:
    """One language's test programs. ``files`` are the extra files of the multi-file program."""

    hello: str
    echo: str  # prints "args=" + the arguments joined by "|", then "line=" + the first line of stdin
    multi: str  # prints greet("runbox") with greet defined in ``files``; empty: not tested
    files: dict[str, str]
    crash: str  # fails at run time
    crash_exit: int | None  # the expected exit code, or None when a signal ends it
    crash_signal: int | None = None
    crash_stderr: str = ""
    syntax_error: str = ""  # compiled languages only


PROGRAMS: dict[str, Programs] = {
    "python": Programs(
        hello='print("hello, world")\n',
        echo='import sys\nprint("args=" + "|".join(sys.argv[1:]))\nprint("line=" + input())\n',
        multi='from util import greet\n\nprint(greet("runbox"))\n',
        files={"util.py": 'def greet(name):\n    return "hello, " + name\n'},
        crash='raise ValueError("boom")\n',
        crash_exit=1,
        crash_stderr="ValueError: boom",
    ),
    "javascript": Programs(
        hello='console.log("hello, world");\n',
        echo=(
            'const lines = require("fs").readFileSync(0, "utf8").split("\\n");\n'
            'console.log("args=" + process.argv.slice(2).join("|"));\n'
            'console.log("line=" + lines[0]);\n'
        ),
        multi='const { greet } = require("./util");\n\nconsole.log(greet("runbox"));\n',
        files={"util.js": 'exports.greet = (name) => "hello, " + name;\n'},
        crash='null.boom();\n',
        crash_exit=1,
        crash_stderr="TypeError",
    ),
    "c": Programs(
        hello='#include <stdio.h>\n\nint main(void) {\n    printf("hello, world\\n");\n    return 0;\n}\n',
        echo=(
            "#include <stdio.h>\n#include <string.h>\n\n"
            "int main(int argc, char **argv) {\n"
            '    char line[256] = "";\n'
            '    printf("args=");\n'
            '    for (int i = 1; i < argc; i++) printf("%s%s", i > 1 ? "|" : "", argv[i]);\n'
            "    if (fgets(line, sizeof line, stdin)) line[strcspn(line, \"\\n\")] = 0;\n"
            '    printf("\\nline=%s\\n", line);\n'
            "    return 0;\n}\n"
        ),
        multi=(
            '#include <stdio.h>\n#include "util.h"\n\n'
            'int main(void) {\n    char buf[64];\n    greet(buf, sizeof buf, "runbox");\n'
            "    puts(buf);\n    return 0;\n}\n"
        ),
        files={
            "util.h": "#include <stddef.h>\nvoid greet(char *out, size_t size, const char *name);\n",
            # sqrt of a run-time value: the program needs libm (-lm) to link.
            "util.c": (
                '#include <math.h>\n#include <stdio.h>\n#include <string.h>\n#include "util.h"\n\n'
                "void greet(char *out, size_t size, const char *name) {\n"
                "    double n = (double)strlen(name);\n"
                '    snprintf(out, size, "hello, %.*s", (int)sqrt(n * n), name);\n}\n'
            ),
        },
        crash='#include <stdio.h>\n#include <stdlib.h>\n\nint main(void) {\n    fputs("boom\\n", stderr);\n'
              "    exit(3);\n}\n",
        crash_exit=3,
        crash_stderr="boom",
        syntax_error="int main(void) {\n    return 0\n}\n",
    ),
    "cpp": Programs(
        hello='#include <iostream>\n\nint main() {\n    std::cout << "hello, world" << std::endl;\n}\n',
        echo=(
            "#include <iostream>\n#include <string>\n\n"
            "int main(int argc, char **argv) {\n"
            "    std::string line;\n    std::getline(std::cin, line);\n"
            '    std::cout << "args=";\n'
            '    for (int i = 1; i < argc; ++i) std::cout << (i > 1 ? "|" : "") << argv[i];\n'
            '    std::cout << "\\nline=" << line << "\\n";\n}\n'
        ),
        multi=(
            '#include <iostream>\n#include "util.hpp"\n\n'
            'int main() {\n    std::cout << greet("runbox") << "\\n";\n}\n'
        ),
        files={
            "util.hpp": "#include <string>\nstd::string greet(const std::string &name);\n",
            "util.cpp": (
                '#include "util.hpp"\n\n'
                'std::string greet(const std::string &name) {\n    return "hello, " + name;\n}\n'
            ),
        },
        # An uncaught exception: std::terminate aborts the process.
        crash=(
            "#include <vector>\n\n"
            "int main(int argc, char **) {\n    std::vector<int> v;\n    return v.at(argc + 2);\n}\n"
        ),
        crash_exit=None,
        crash_signal=6,
        crash_stderr="std::out_of_range",
        syntax_error="int main() {\n    return 0\n}\n",
    ),
    "go": Programs(
        hello='package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hello, world")\n}\n',
        echo=(
            'package main\n\nimport (\n\t"bufio"\n\t"fmt"\n\t"os"\n\t"strings"\n)\n\n'
            "func main() {\n"
            "\tline, _ := bufio.NewReader(os.Stdin).ReadString('\\n')\n"
            '\tfmt.Println("args=" + strings.Join(os.Args[1:], "|"))\n'
            '\tfmt.Println("line=" + strings.TrimRight(line, "\\n"))\n}\n'
        ),
        multi='package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println(greet("runbox"))\n}\n',
        files={"util.go": 'package main\n\nfunc greet(name string) string {\n\treturn "hello, " + name\n}\n'},
        crash='package main\n\nfunc main() {\n\tpanic("boom")\n}\n',
        crash_exit=2,
        crash_stderr="panic: boom",
        syntax_error='package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("x"\n}\n',
    ),
    "java": Programs(
        hello=(
            "public class Main {\n    public static void main(String[] args) {\n"
            '        System.out.println("hello, world");\n    }\n}\n'
        ),
        echo=(
            "import java.io.BufferedReader;\nimport java.io.InputStreamReader;\n\n"
            "public class Main {\n    public static void main(String[] args) throws Exception {\n"
            "        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));\n"
            "        String line = in.readLine();\n"
            '        System.out.println("args=" + String.join("|", args));\n'
            '        System.out.println("line=" + line);\n    }\n}\n'
        ),
        multi=(
            "public class Main {\n    public static void main(String[] args) {\n"
            '        System.out.println(Util.greet("runbox"));\n    }\n}\n'
        ),
        files={
            "Util.java": (
                "public class Util {\n    static String greet(String name) {\n"
                '        return "hello, " + name;\n    }\n}\n'
            )
        },
        crash=(
            "public class Main {\n    public static void main(String[] args) {\n"
            '        System.out.println(Integer.parseInt("boom"));\n    }\n}\n'
        ),
        crash_exit=1,
        crash_stderr="NumberFormatException",
        syntax_error="public class Main {\n    public static void main(String[] args) {\n        int x = ;\n    }\n}\n",
    ),
    "rust": Programs(
        hello='fn main() {\n    println!("hello, world");\n}\n',
        echo=(
            "use std::io::BufRead;\n\nfn main() {\n"
            "    let args: Vec<String> = std::env::args().skip(1).collect();\n"
            "    let mut line = String::new();\n"
            "    std::io::stdin().lock().read_line(&mut line).unwrap();\n"
            '    println!("args={}", args.join("|"));\n'
            "    println!(\"line={}\", line.trim_end_matches('\\n'));\n}\n"
        ),
        multi='mod util;\n\nfn main() {\n    println!("{}", util::greet("runbox"));\n}\n',
        files={"util.rs": 'pub fn greet(name: &str) -> String {\n    format!("hello, {}", name)\n}\n'},
        crash=(
            "fn main() {\n    let v: Vec<u8> = Vec::new();\n"
            '    println!("{}", v[std::env::args().count() + 2]);\n}\n'
        ),
        crash_exit=101,
        crash_stderr="index out of bounds",
        syntax_error="fn main() {\n    let x = ;\n}\n",
    ),
    "ruby": Programs(
        hello='puts "hello, world"\n',
        echo='line = $stdin.gets.to_s.chomp\nputs "args=#{ARGV.join("|")}"\nputs "line=#{line}"\n',
        multi='require_relative "util"\n\nputs greet("runbox")\n',
        files={"util.rb": 'def greet(name)\n  "hello, #{name}"\nend\n'},
        crash='raise "boom"\n',
        crash_exit=1,
        crash_stderr="boom (RuntimeError)",
    ),
    "bash": Programs(
        hello='echo "hello, world"\n',
        echo='IFS= read -r line\n(IFS="|"; echo "args=$*")\necho "line=$line"\n',
        multi='source ./util.sh\n\ngreet runbox\n',
        files={"util.sh": 'greet() {\n    echo "hello, $1"\n}\n'},
        crash="set -e\nno_such_command_here\necho unreachable\n",
        crash_exit=127,
        crash_stderr="command not found",
    ),
    "php": Programs(
        hello='<?php\necho "hello, world\\n";\n',
        echo=(
            '<?php\n$line = rtrim((string) fgets(STDIN), "\\n");\n'
            'echo "args=" . implode("|", array_slice($argv, 1)) . "\\n";\n'
            'echo "line=$line\\n";\n'
        ),
        multi='<?php\ninclude "util.php";\n\necho greet("runbox"), "\\n";\n',
        files={"util.php": '<?php\nfunction greet(string $name): string {\n    return "hello, $name";\n}\n'},
        crash='<?php\nthrow new RuntimeException("boom");\n',
        crash_exit=255,
        crash_stderr="Uncaught RuntimeException: boom",
    ),
    "typescript": Programs(
        hello='const greeting: string = "hello, world";\nconsole.log(greeting);\n',
        echo=(
            'import { readFileSync } from "fs";\n\n'
            'const lines: string[] = readFileSync(0, "utf8").split("\\n");\n'
            'console.log("args=" + process.argv.slice(2).join("|"));\n'
            'console.log("line=" + lines[0]);\n'
        ),
        multi='import { greet } from "./util";\n\nconsole.log(greet("runbox"));\n',
        files={"util.ts": 'export function greet(name: string): string {\n    return "hello, " + name;\n}\n'},
        crash='const n: number = JSON.parse("null");\nconsole.log(n.toFixed(2));\n',
        crash_exit=1,
        crash_stderr="TypeError",
        syntax_error='const x: number = "not a number";\nconsole.log(x);\n',
    ),
}

