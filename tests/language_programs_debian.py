# ruff: noqa: E501  (programs are data: a source line stays one line)
"""Test programs of the languages added last from Judge0 CE's checklist (see tests/language_programs.py)."""

from __future__ import annotations

from tests.language_programs import Programs

PROLOG_ECHO = """:- initialization(main).

read_line(Cs) :- get_char(C), ( (C == '\\n' ; C == end_of_file) -> Cs = [] ; read_line(Rest), Cs = [C|Rest] ).

join([], _, '').
join([X], _, X) :- !.
join([X|Xs], Sep, R) :- join(Xs, Sep, R0), atom_concat(X, Sep, X1), atom_concat(X1, R0, R).

main :-
    argument_list(Args), join(Args, '|', A),
    read_line(Cs), atom_chars(L, Cs),
    write('args='), write(A), nl,
    write('line='), write(L), nl.
"""

OBJC_ECHO = """#import <Foundation/Foundation.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    NSAutoreleasePool *pool = [[NSAutoreleasePool alloc] init];
    NSMutableArray *args = [NSMutableArray array];
    for (int i = 1; i < argc; i++) [args addObject:[NSString stringWithUTF8String:argv[i]]];
    char line[256] = "";
    if (fgets(line, sizeof line, stdin)) line[strcspn(line, "\\n")] = 0;
    printf("args=%s\\nline=%s\\n", [[args componentsJoinedByString:@"|"] UTF8String], line);
    [pool drain];
    return 0;
}
"""

PROGRAMS_DEBIAN: dict[str, Programs] = {
    "lua": Programs(
        hello='print("hello, world")\n',
        echo='local line = io.read("l") or ""\nprint("args=" .. table.concat(arg, "|"))\nprint("line=" .. line)\n',
        multi='local util = require("util")\n\nprint(util.greet("runbox"))\n',
        files={"util.lua": 'local M = {}\n\nfunction M.greet(name)\n    return "hello, " .. name\nend\n\nreturn M\n'},
        crash='error("boom")\n',
        crash_exit=1,
        crash_stderr="main.lua:1: boom",
    ),
    "perl": Programs(
        hello='print "hello, world\\n";\n',
        echo='my $line = <STDIN>;\nchomp $line;\nprint "args=" . join("|", @ARGV) . "\\n";\nprint "line=$line\\n";\n',
        multi='use lib ".";\nuse Util;\n\nprint Util::greet("runbox"), "\\n";\n',
        files={"Util.pm": 'package Util;\n\nsub greet {\n    my ($name) = @_;\n    return "hello, $name";\n}\n\n1;\n'},
        crash='use strict;\n\nmy %h;\n$h{x}->method();\n',
        crash_exit=255,
        crash_stderr="Can't call method",
    ),
    "r": Programs(
        hello='cat("hello, world\\n")\n',
        echo=(
            'args <- commandArgs(trailingOnly = TRUE)\nline <- readLines(file("stdin"), n = 1)\n'
            'cat("args=", paste(args, collapse = "|"), "\\n", sep = "")\ncat("line=", line, "\\n", sep = "")\n'
        ),
        multi='source("util.r")\n\ncat(greet("runbox"), "\\n", sep = "")\n',
        files={"util.r": 'greet <- function(name) paste0("hello, ", name)\n'},
        crash='stop("boom")\n',
        crash_exit=1,
        crash_stderr="Error: boom",
    ),
    "ocaml": Programs(
        hello='let () = print_endline "hello, world"\n',
        echo=(
            "let () =\n  let line = try input_line stdin with End_of_file -> \"\" in\n"
            "  let args = Array.to_list (Array.sub Sys.argv 1 (Array.length Sys.argv - 1)) in\n"
            '  print_endline ("args=" ^ String.concat "|" args);\n  print_endline ("line=" ^ line)\n'
        ),
        multi='let () = print_endline (Util.greet "runbox")\n',
        files={"util.ml": 'let greet name = "hello, " ^ name\n'},
        crash='let () = failwith "boom"\n',
        crash_exit=2,
        crash_stderr='Failure("boom")',
        syntax_error="let () = print_endline (\n",
    ),
    "pascal": Programs(
        hello="program Hello;\nbegin\n  writeln('hello, world');\nend.\n",
        echo=(
            "program Echo;\nvar\n  i: integer;\n  s, line: string;\nbegin\n  readln(line);\n  s := '';\n"
            "  for i := 1 to ParamCount do\n  begin\n    if i > 1 then s := s + '|';\n    s := s + ParamStr(i);\n  end;\n"
            "  writeln('args=', s);\n  writeln('line=', line);\nend.\n"
        ),
        multi="program Main;\nuses Util;\nbegin\n  writeln(Greet('runbox'));\nend.\n",
        files={"util.pas": (
            "unit Util;\n\ninterface\n\nfunction Greet(name: string): string;\n\nimplementation\n\n"
            "function Greet(name: string): string;\nbegin\n  Greet := 'hello, ' + name;\nend;\n\nend.\n"
        )},
        crash="program Crash;\nbegin\n  writeln(StdErr, 'boom');\n  Halt(3);\nend.\n",
        crash_exit=3,
        crash_stderr="boom",
        syntax_error="program Broken;\nbegin\n  x := ;\nend.\n",
    ),
    "prolog": Programs(
        hello=":- initialization(main).\n\nmain :- write('hello, world'), nl.\n",
        echo=PROLOG_ECHO,
        multi=":- initialization(main).\n:- include('util.pl').\n\nmain :- greet(runbox, G), write(G), nl.\n",
        files={"util.pl": "greet(Name, G) :- atom_concat('hello, ', Name, G).\n"},
        crash=":- initialization(main).\n\nmain :- write(user_error, boom), nl(user_error), halt(3).\n",
        crash_exit=3,
        crash_stderr="boom",
        syntax_error=":- initialization(main).\n\nmain :- write(.\n",
    ),
    "sql": Programs(
        hello="SELECT 'hello, world';\n",
        echo=(
            "CREATE TEMP TABLE input(data TEXT);\n.import --ascii /dev/stdin input\n"
            "SELECT 'args=' || coalesce((SELECT group_concat(value, '|') FROM (SELECT value FROM args ORDER BY rowid)), '');\n"
            "SELECT 'line=' || substr(data, 1, instr(data || char(10), char(10)) - 1) FROM input;\n"
        ),
        multi=".read util.sql\nSELECT greeting || 'runbox' FROM prefix;\n",
        files={"util.sql": "CREATE TABLE prefix(greeting TEXT);\nINSERT INTO prefix VALUES ('hello, ');\n"},
        crash="SELECT * FROM no_such_table;\n",
        crash_exit=1,
        crash_stderr="no such table",
    ),
    "objectivec": Programs(
        hello=(
            "#import <Foundation/Foundation.h>\n#include <stdio.h>\n\nint main(void) {\n"
            "    NSAutoreleasePool *pool = [[NSAutoreleasePool alloc] init];\n"
            '    NSString *s = @"hello, world";\n    printf("%s\\n", [s UTF8String]);\n    [pool drain];\n    return 0;\n}\n'
        ),
        echo=OBJC_ECHO,
        multi=(
            '#import <Foundation/Foundation.h>\n#include <stdio.h>\n#import "Util.h"\n\nint main(void) {\n'
            "    NSAutoreleasePool *pool = [[NSAutoreleasePool alloc] init];\n"
            '    printf("%s\\n", [[Util greet:@"runbox"] UTF8String]);\n    [pool drain];\n    return 0;\n}\n'
        ),
        files={
            "Util.h": "#import <Foundation/Foundation.h>\n\n@interface Util : NSObject\n+ (NSString *)greet:(NSString *)name;\n@end\n",
            "Util.m": '#import "Util.h"\n\n@implementation Util\n+ (NSString *)greet:(NSString *)name {\n    return [@"hello, " stringByAppendingString:name];\n}\n@end\n',
        },
        # An uncaught exception: GNUstep names it and ends the process with status 1.
        crash=(
            "#import <Foundation/Foundation.h>\n\nint main(void) {\n"
            "    NSAutoreleasePool *pool = [[NSAutoreleasePool alloc] init];\n"
            '    [NSException raise:NSInvalidArgumentException format:@"boom"];\n    [pool drain];\n    return 0;\n}\n'
        ),
        crash_exit=1,
        crash_stderr="boom",
        syntax_error="int main(void) {\n    return 0\n}\n",
    ),
}

JVM_PROGRAMS: dict[str, Programs] = {
    "kotlin": Programs(
        hello='fun main() {\n    println("hello, world")\n}\n',
        echo='fun main(args: Array<String>) {\n    val line = readLine() ?: ""\n    println("args=" + args.joinToString("|"))\n    println("line=" + line)\n}\n',
        multi='fun main() {\n    println(greet("runbox"))\n}\n',
        files={"util.kt": 'fun greet(name: String) = "hello, " + name\n'},
        crash='fun main() {\n    throw IllegalStateException("boom")\n}\n',
        crash_exit=1,
        crash_stderr="IllegalStateException: boom",
        syntax_error="fun main() {\n    val x = \n}\n",
    ),
    "scala": Programs(
        hello='object Main {\n  def main(args: Array[String]): Unit = {\n    println("hello, world")\n  }\n}\n',
        echo=(
            "object Main {\n  def main(args: Array[String]): Unit = {\n"
            '    val line = Option(scala.io.StdIn.readLine()).getOrElse("")\n'
            '    println("args=" + args.mkString("|"))\n    println("line=" + line)\n  }\n}\n'
        ),
        multi='object Main {\n  def main(args: Array[String]): Unit = {\n    println(Util.greet("runbox"))\n  }\n}\n',
        files={"Util.scala": 'object Util {\n  def greet(name: String): String = "hello, " + name\n}\n'},
        crash='object Main {\n  def main(args: Array[String]): Unit = {\n    throw new IllegalStateException("boom")\n  }\n}\n',
        crash_exit=1,
        crash_stderr="IllegalStateException: boom",
        syntax_error="object Main {\n  def main(args: Array[String]): Unit = {\n    val x = \n  }\n}\n",
    ),
    "clojure": Programs(
        hello='(println "hello, world")\n',
        echo=(
            "(require '[clojure.string :as str])\n\n"
            '(let [line (or (read-line) "")]\n'
            '  (println (str "args=" (str/join "|" *command-line-args*)))\n'
            '  (println (str "line=" line)))\n'
        ),
        multi='(load-file "util.clj")\n\n(println (greet "runbox"))\n',
        files={"util.clj": '(defn greet [name] (str "hello, " name))\n'},
        crash='(throw (ex-info "boom" {}))\n',
        crash_exit=1,
        crash_stderr="boom",
    ),
    "groovy": Programs(
        hello='println "hello, world"\n',
        echo='def line = System.in.newReader().readLine() ?: ""\nprintln "args=" + args.join("|")\nprintln "line=" + line\n',
        multi='println Util.greet("runbox")\n',
        files={"Util.groovy": 'class Util {\n    static String greet(String name) {\n        "hello, " + name\n    }\n}\n'},
        crash='throw new IllegalStateException("boom")\n',
        crash_exit=1,
        crash_stderr="IllegalStateException: boom",
    ),
}

PROGRAMS_DEBIAN.update(JVM_PROGRAMS)
PROGRAMS_DEBIAN.update({
    "elixir": Programs(
        hello='IO.puts("hello, world")\n',
        echo=(
            'line = IO.gets("") |> to_string() |> String.trim_trailing("\\n")\n'
            'IO.puts("args=" <> Enum.join(System.argv(), "|"))\nIO.puts("line=" <> line)\n'
        ),
        multi='Code.require_file("util.exs")\n\nIO.puts(Util.greet("runbox"))\n',
        files={"util.exs": 'defmodule Util do\n  def greet(name), do: "hello, " <> name\nend\n'},
        crash='raise "boom"\n',
        crash_exit=1,
        crash_stderr="(RuntimeError) boom",
    ),
    "racket": Programs(
        hello='#lang racket/base\n(displayln "hello, world")\n',
        echo=(
            "#lang racket/base\n(require racket/string)\n(define line (read-line))\n"
            '(displayln (string-append "args=" (string-join (vector->list (current-command-line-arguments)) "|")))\n'
            '(displayln (string-append "line=" (if (eof-object? line) "" line)))\n'
        ),
        multi='#lang racket/base\n(require "util.rkt")\n(displayln (greet "runbox"))\n',
        files={"util.rkt": '#lang racket/base\n(provide greet)\n(define (greet name) (string-append "hello, " name))\n'},
        crash='#lang racket/base\n(error "boom")\n',
        crash_exit=1,
        crash_stderr="boom",
    ),
})
PROGRAMS_DEBIAN["octave"] = Programs(
    hello='printf("hello, world\\n");\n',
    echo='args = argv();\nline = fgetl(stdin);\nprintf("args=%s\\nline=%s\\n", strjoin(args\', "|"), line);\n',
    multi='printf("%s\\n", greet("runbox"));\n',
    files={"greet.m": 'function s = greet(name)\n  s = ["hello, " name];\nend\n'},
    crash='error("boom");\n',
    crash_exit=1,
    crash_stderr="error: boom",
)
PROGRAMS_DEBIAN["tcl"] = Programs(
    hello='puts "hello, world"\n',
    echo='gets stdin line\nputs "args=[join $argv |]"\nputs "line=$line"\n',
    multi="source util.tcl\n\nputs [greet runbox]\n",
    files={"util.tcl": 'proc greet {name} {\n    return "hello, $name"\n}\n'},
    crash='error "boom"\n',
    crash_exit=1,
    crash_stderr="boom",
)
PROGRAMS_DEBIAN["scheme"] = Programs(
    hello='(display "hello, world")\n(newline)\n',
    echo=(
        "(use-modules (ice-9 rdelim))\n\n(define line (read-line))\n"
        '(display (string-append "args=" (string-join (cdr (command-line)) "|")))\n(newline)\n'
        '(display (string-append "line=" (if (eof-object? line) "" line)))\n(newline)\n'
    ),
    multi='(load "util.scm")\n\n(display (greet "runbox"))\n(newline)\n',
    files={"util.scm": '(define (greet name) (string-append "hello, " name))\n'},
    crash='(error "boom")\n',
    crash_exit=1,
    crash_stderr="boom",
)
PROGRAMS_DEBIAN["swift"] = Programs(
    hello='print("hello, world")\n',
    echo='let line = readLine() ?? ""\nprint("args=" + CommandLine.arguments.dropFirst().joined(separator: "|"))\nprint("line=" + line)\n',
    multi='print(greet("runbox"))\n',
    files={"util.swift": 'func greet(_ name: String) -> String {\n    return "hello, " + name\n}\n'},
    # An index out of range traps (ud2): the process ends on SIGILL.
    crash="let a: [Int] = []\nprint(a[CommandLine.arguments.count + 2])\n",
    crash_exit=None,
    crash_signal=4,
    crash_stderr="Index out of range",
    syntax_error="let x = \n",
)
