# ruff: noqa: E501  (programs are data: a source line stays one line)
"""Test programs of the languages added from Judge0 CE's checklist (see tests/language_programs.py)."""

from __future__ import annotations

from tests.language_programs import PROGRAMS, Programs
from tests.language_programs_debian import PROGRAMS_DEBIAN

NASM_ECHO = r"""section .bss
buf resb 256
section .data
prefix db "args="
middle db 10, "line="
bar db "|"
newline db 10
section .text
global _start
_start:
    mov r12, [rsp]
    lea r13, [rsp+16]
    mov r14, 1
    mov rax, 1
    mov rdi, 1
    mov rsi, prefix
    mov rdx, 5
    syscall
next_arg:
    cmp r14, r12
    jge args_done
    cmp r14, 1
    je no_bar
    mov rax, 1
    mov rdi, 1
    mov rsi, bar
    mov rdx, 1
    syscall
no_bar:
    mov rsi, [r13]
    xor rdx, rdx
measure:
    cmp byte [rsi+rdx], 0
    je print_arg
    inc rdx
    jmp measure
print_arg:
    mov rax, 1
    mov rdi, 1
    syscall
    add r13, 8
    inc r14
    jmp next_arg
args_done:
    mov rax, 1
    mov rdi, 1
    mov rsi, middle
    mov rdx, 6
    syscall
    xor rax, rax
    xor rdi, rdi
    mov rsi, buf
    mov rdx, 256
    syscall
    xor rdx, rdx
find_newline:
    cmp rdx, rax
    jge print_line
    cmp byte [buf+rdx], 10
    je print_line
    inc rdx
    jmp find_newline
print_line:
    mov rax, 1
    mov rdi, 1
    mov rsi, buf
    syscall
    mov rax, 1
    mov rdi, 1
    mov rsi, newline
    mov rdx, 1
    syscall
    mov rax, 60
    xor rdi, rdi
    syscall
"""

NASM_WRITE = """section .data
msg db "{text}", 10
section .text
global _start
_start:
    mov rax, 1
    mov rdi, {fd}
    mov rsi, msg
    mov rdx, {length}
    syscall
    mov rax, 60
    mov rdi, {code}
    syscall
"""

PROGRAMS_MORE: dict[str, Programs] = {
    "assembly": Programs(
        hello=NASM_WRITE.format(text="hello, world", fd=1, length=13, code=0),
        echo=NASM_ECHO,
        multi='%include "util.asm"\nsection .text\nglobal _start\n_start:\n    greet\n    mov rax, 60\n    xor rdi, rdi\n    syscall\n',
        files={"util.asm": (
            'section .data\ngreeting db "hello, runbox", 10\n'
            "%macro greet 0\n    mov rax, 1\n    mov rdi, 1\n    mov rsi, greeting\n    mov rdx, 14\n    syscall\n%endmacro\n"
        )},
        crash=NASM_WRITE.format(text="boom", fd=2, length=5, code=3),
        crash_exit=3,
        crash_stderr="boom",
        syntax_error="section .text\nglobal _start\n_start:\n    mov rax,\n",
    ),
    "basic": Programs(
        hello='print "hello, world"\n',
        echo=(
            'a$ = ""\nn = peek("arguments")\nfor i = 1 to n\n  if i > 1 a$ = a$ + "|"\n  a$ = a$ + peek$("argument")\nnext i\n'
            'print "args=" + a$\nline input "" l$\nprint "line=" + l$\n'
        ),
        multi="",
        files={},
        crash='error "boom"\n',
        crash_exit=1,
        crash_stderr="boom",
    ),
    "csharp": Programs(
        hello='using System;\n\nclass Program {\n    static void Main() {\n        Console.WriteLine("hello, world");\n    }\n}\n',
        echo=(
            "using System;\n\nclass Program {\n    static void Main(string[] args) {\n"
            '        string line = Console.ReadLine();\n'
            '        Console.WriteLine("args=" + string.Join("|", args));\n'
            '        Console.WriteLine("line=" + line);\n    }\n}\n'
        ),
        multi='using System;\n\nclass Program {\n    static void Main() {\n        Console.WriteLine(Util.Greet("runbox"));\n    }\n}\n',
        files={"util.cs": 'static class Util {\n    public static string Greet(string name) { return "hello, " + name; }\n}\n'},
        crash='using System;\n\nclass Program {\n    static void Main() {\n        throw new InvalidOperationException("boom");\n    }\n}\n',
        crash_exit=1,
        crash_stderr="InvalidOperationException: boom",
        syntax_error="class Program {\n    static void Main() {\n        int x = ;\n    }\n}\n",
    ),
    "cobol": Programs(
        hello='IDENTIFICATION DIVISION.\nPROGRAM-ID. HELLO.\nPROCEDURE DIVISION.\n    DISPLAY "hello, world".\n    STOP RUN.\n',
        echo=(
            "IDENTIFICATION DIVISION.\nPROGRAM-ID. ECHO.\nDATA DIVISION.\nWORKING-STORAGE SECTION.\n"
            "01 ARGC PIC 9(4).\n01 I PIC 9(4).\n01 ARG PIC X(100).\n01 OUT PIC X(400) VALUE SPACES.\n"
            "01 PTR PIC 9(4) VALUE 1.\n01 LN PIC X(200).\n"
            "PROCEDURE DIVISION.\n"
            "    ACCEPT ARGC FROM ARGUMENT-NUMBER.\n"
            "    PERFORM VARYING I FROM 1 BY 1 UNTIL I > ARGC\n"
            "        ACCEPT ARG FROM ARGUMENT-VALUE\n"
            '        IF I > 1 STRING "|" DELIMITED BY SIZE INTO OUT WITH POINTER PTR END-IF\n'
            "        STRING FUNCTION TRIM(ARG TRAILING) DELIMITED BY SIZE INTO OUT WITH POINTER PTR\n"
            "    END-PERFORM.\n"
            '    DISPLAY "args=" FUNCTION TRIM(OUT TRAILING).\n'
            "    ACCEPT LN.\n"
            '    DISPLAY "line=" FUNCTION TRIM(LN TRAILING).\n'
            "    STOP RUN.\n"
        ),
        multi="",
        files={},
        crash=(
            'IDENTIFICATION DIVISION.\nPROGRAM-ID. CRASH.\nPROCEDURE DIVISION.\n    DISPLAY "boom" UPON SYSERR.\n'
            "    MOVE 3 TO RETURN-CODE.\n    STOP RUN.\n"
        ),
        crash_exit=3,
        crash_stderr="boom",
        syntax_error='IDENTIFICATION DIVISION.\nPROGRAM-ID. BROKEN.\nPROCEDURE DIVISION.\n    DISPLAY "x"\n    MOVE TO.\n',
    ),
    "commonlisp": Programs(
        hello='(format t "hello, world~%")\n',
        echo=(
            '(let ((line (read-line *standard-input* nil "")))\n'
            '  (format t "args=~{~a~^|~}~%" (rest sb-ext:*posix-argv*))\n'
            '  (format t "line=~a~%" line))\n'
        ),
        multi='(load "util.lisp")\n\n(format t "~a~%" (greet "runbox"))\n',
        files={"util.lisp": '(defun greet (name) (concatenate \'string "hello, " name))\n'},
        crash='(error "boom")\n',
        crash_exit=1,
        crash_stderr="boom",
    ),
    "d": Programs(
        hello='import std.stdio;\n\nvoid main() {\n    writeln("hello, world");\n}\n',
        echo=(
            "import std.stdio;\nimport std.array : join;\nimport std.string : chomp;\n\n"
            "void main(string[] args) {\n    string line = readln().chomp;\n"
            '    writeln("args=", args[1 .. $].join("|"));\n    writeln("line=", line);\n}\n'
        ),
        multi='import std.stdio;\nimport util;\n\nvoid main() {\n    writeln(greet("runbox"));\n}\n',
        files={"util.d": 'module util;\n\nstring greet(string name) {\n    return "hello, " ~ name;\n}\n'},
        crash='void main() {\n    throw new Exception("boom");\n}\n',
        crash_exit=1,
        crash_stderr="boom",
        syntax_error="void main() {\n    int x = ;\n}\n",
    ),
    "erlang": Programs(
        hello='main(_) ->\n    io:format("hello, world~n").\n',
        echo=(
            "main(Args) ->\n"
            '    Line = string:trim(io:get_line(""), trailing, "\\n"),\n'
            '    io:format("args=~s~n", [lists:join("|", Args)]),\n'
            '    io:format("line=~s~n", [Line]).\n'
        ),
        multi="",
        files={},
        crash="main(_) ->\n    erlang:error(boom).\n",
        crash_exit=127,
        crash_stderr="boom",
    ),
    "fortran": Programs(
        hello='program hello\n    print "(a)", "hello, world"\nend program hello\n',
        echo=(
            "program echo\n    implicit none\n    character(len=200) :: arg, line\n"
            "    character(len=1000) :: out\n    integer :: i\n    out = ''\n"
            "    do i = 1, command_argument_count()\n        call get_command_argument(i, arg)\n"
            "        if (i > 1) out = trim(out) // '|'\n"
            "        if (i > 1) then\n            out = out(1:len_trim(out)) // trim(arg)\n"
            "        else\n            out = trim(arg)\n        end if\n    end do\n"
            "    read (*, '(a)') line\n"
            "    print '(a)', 'args=' // trim(out)\n    print '(a)', 'line=' // trim(line)\n"
            "end program echo\n"
        ),
        multi='program main\n    use util\n    print "(a)", greet("runbox")\nend program main\n',
        files={"util.f90": (
            "module util\ncontains\n    function greet(name) result(s)\n        character(len=*), intent(in) :: name\n"
            "        character(len=:), allocatable :: s\n        s = 'hello, ' // name\n    end function greet\nend module util\n"
        )},
        crash='program crash\n    error stop "boom"\nend program crash\n',
        crash_exit=1,
        crash_stderr="boom",
        syntax_error="program broken\n    integer :: x =\nend program broken\n",
    ),
    "haskell": Programs(
        hello='main :: IO ()\nmain = putStrLn "hello, world"\n',
        echo=(
            "import Data.List (intercalate)\nimport System.Environment (getArgs)\n\n"
            'main :: IO ()\nmain = do\n    args <- getArgs\n    line <- getLine\n'
            '    putStrLn ("args=" ++ intercalate "|" args)\n    putStrLn ("line=" ++ line)\n'
        ),
        multi='import Util (greet)\n\nmain :: IO ()\nmain = putStrLn (greet "runbox")\n',
        files={"Util.hs": 'module Util (greet) where\n\ngreet :: String -> String\ngreet name = "hello, " ++ name\n'},
        crash='main :: IO ()\nmain = error "boom"\n',
        crash_exit=1,
        crash_stderr="boom",
        syntax_error='main :: IO ()\nmain = putStrLn (\n',
    ),
    "awk": Programs(
        hello='BEGIN { print "hello, world" }\n',
        echo=(
            'BEGIN {\n    s = ""\n    for (i = 1; i < ARGC; i++) s = s (i > 1 ? "|" : "") ARGV[i]\n'
            '    print "args=" s\n    ARGC = 1\n    getline line\n    print "line=" line\n}\n'
        ),
        multi='@include "util.awk"\n\nBEGIN { print greet("runbox") }\n',
        files={"util.awk": 'function greet(name) {\n    return "hello, " name\n}\n'},
        crash='BEGIN {\n    print "boom" > "/dev/stderr"\n    exit 3\n}\n',
        crash_exit=3,
        crash_stderr="boom",
    ),
    "ada": Programs(
        hello='with Ada.Text_IO;\n\nprocedure Main is\nbegin\n   Ada.Text_IO.Put_Line ("hello, world");\nend Main;\n',
        echo=(
            "with Ada.Text_IO; use Ada.Text_IO;\nwith Ada.Command_Line; use Ada.Command_Line;\n\n"
            "procedure Main is\n   Line : constant String := Get_Line;\nbegin\n   Put (\"args=\");\n"
            "   for I in 1 .. Argument_Count loop\n      if I > 1 then\n         Put (\"|\");\n      end if;\n"
            "      Put (Argument (I));\n   end loop;\n   New_Line;\n   Put_Line (\"line=\" & Line);\nend Main;\n"
        ),
        multi='with Ada.Text_IO;\nwith Util;\n\nprocedure Main is\nbegin\n   Ada.Text_IO.Put_Line (Util.Greet ("runbox"));\nend Main;\n',
        files={
            "util.ads": "package Util is\n   function Greet (Name : String) return String;\nend Util;\n",
            "util.adb": 'package body Util is\n   function Greet (Name : String) return String is\n   begin\n      return "hello, " & Name;\n   end Greet;\nend Util;\n',
        },
        crash='procedure Main is\nbegin\n   raise Program_Error with "boom";\nend Main;\n',
        crash_exit=1,
        crash_stderr="boom",
        syntax_error="procedure Main is\nbegin\n   X := ;\nend Main;\n",
    ),
}

# Every language's programs; c-clang and cpp-clang run the same programs as their GCC namesakes.
ALL_PROGRAMS: dict[str, Programs] = {**PROGRAMS, **PROGRAMS_MORE, **PROGRAMS_DEBIAN, "c-clang": PROGRAMS["c"], "cpp-clang": PROGRAMS["cpp"]}
