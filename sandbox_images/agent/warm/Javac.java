// runbox's warm start for Java's compile step (see the agent's prepare_warm): started before the
// job arrives as `java JVM-OPTIONS -cp /opt/runbox/warm/javac.jar Javac FD`, with the JVM options
// the compile command gives javac's launcher through -J. Before the job it compiles a small
// program, and one with errors, in memory (nothing is written anywhere), so that javac's classes
// are loaded and its hottest code compiled (the job, once come, waits for no further warm-up
// compile); then it reads the compile command's arguments (`-c SCRIPT [sh OPTIONS...]`,
// NUL-separated) from pipe FD, lets sh expand their words exactly as the cold command's shell
// would, and runs javac's own entry point on them (a new compiler, file manager and log, as a
// cold javac makes): the same diagnostics, class files and exit status. What the warm-up leaves
// in the JVM is javac's loaded classes, the JIT's code and the caches javac keeps of the JDK's
// read-only modules; a command this stub cannot stand in for (other JVM options) runs cold.
import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintWriter;
import java.io.Writer;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import javax.tools.FileObject;
import javax.tools.ForwardingJavaFileManager;
import javax.tools.JavaCompiler;
import javax.tools.JavaFileManager;
import javax.tools.JavaFileObject;
import javax.tools.SimpleJavaFileObject;
import javax.tools.StandardJavaFileManager;
import javax.tools.ToolProvider;

public final class Javac {
    private static final String PREFIX = "exec javac ";

    private Javac() {}

    public static void main(String[] args) throws Exception {
        List<String> jvmOptions = ownJvmOptions();
        // What javac's launcher tells javac (its AddApplicationOptions): without application.home
        // javac would take this JVM's class path for the user's, not CLASSPATH or ".".
        System.setProperty("application.home", System.getProperty("java.home"));
        String classPath = System.getenv("CLASSPATH");
        if (classPath != null) {
            System.setProperty("env.class.path", classPath);
        }
        // `Javac [--full] FD`: --full (the image build, whose archive is to hold every class
        // the warm-up loads) warms up in full even when the job is already there.
        boolean full = args.length == 2 && args[0].equals("--full");
        InputStream control = new FileInputStream("/proc/self/fd/" + args[args.length - 1]);
        warmUp(full ? InputStream.nullInputStream() : control);
        serve(control, jvmOptions);
    }

    /** The job: its compile command's arguments from the pipe, then javac on their words. */
    private static void serve(InputStream in, List<String> jvmOptions) throws Exception {
        ByteArrayOutputStream read = new ByteArrayOutputStream();
        // Read by hand: FileInputStream.readAllBytes seeks, which a pipe refuses on JDK 17.
        byte[] buffer = new byte[65536];
        for (int n; (n = in.read(buffer)) > 0;) {
            read.write(buffer, 0, n);
        }
        in.close();
        byte[] payload = read.toByteArray();
        if (payload.length == 0) {
            Runtime.getRuntime().halt(0);
        }
        String[] argv = new String(payload, StandardCharsets.UTF_8).split("\0", -1);
        List<String> words = javacWords(argv);
        List<String> javacArgs = new ArrayList<>();
        List<String> launcher = new ArrayList<>();
        if (words != null) {
            for (String word : words) {
                if (word.startsWith("-J")) {
                    if (!ownArchive(word.substring(2))) {
                        launcher.add(word.substring(2));
                    }
                } else {
                    javacArgs.add(word);
                }
            }
        }
        if (words == null || !launcher.equals(jvmOptions)) {
            // Not the command this stub stands in for: run it as given.
            List<String> command = new ArrayList<>(List.of("/bin/sh"));
            command.addAll(Arrays.asList(argv));
            Process cold = new ProcessBuilder(command).inheritIO().start();
            System.exit(cold.waitFor());
        }
        com.sun.tools.javac.Main.main(javacArgs.toArray(new String[0]));
    }

    /** The words sh gives javac for `-c SCRIPT [sh OPTIONS...]`, or null for another command. */
    private static List<String> javacWords(String[] argv) throws IOException, InterruptedException {
        if (argv.length < 2 || !argv[0].equals("-c") || !argv[1].startsWith(PREFIX)) {
            return null;
        }
        List<String> command = new ArrayList<>(List.of("/bin/sh", "-c",
            "exec printf '%s\\0' " + argv[1].substring(PREFIX.length())));
        command.addAll(Arrays.asList(argv).subList(2, argv.length));
        Process shell = new ProcessBuilder(command)
            .redirectInput(ProcessBuilder.Redirect.INHERIT)
            .redirectError(ProcessBuilder.Redirect.INHERIT)
            .start();
        byte[] out = shell.getInputStream().readAllBytes();
        if (shell.waitFor() != 0) {
            return null;
        }
        String text = new String(out, StandardCharsets.UTF_8);
        if (text.isEmpty()) {
            return new ArrayList<>();
        }
        return new ArrayList<>(Arrays.asList(text.substring(0, text.length() - 1).split("\0", -1)));
    }

    /** Whether a JVM option names a class-data archive: the cold javac's and this stub's differ. */
    private static boolean ownArchive(String option) {
        return option.startsWith("-XX:SharedArchiveFile=") || option.startsWith("-XX:ArchiveClassesAtExit=");
    }

    /** The options this JVM was started with (from its command line), but its CDS archive. */
    private static List<String> ownJvmOptions() throws IOException {
        byte[] raw = Files.readAllBytes(Paths.get("/proc/self/cmdline"));
        List<String> all = Arrays.asList(new String(raw, StandardCharsets.UTF_8).split("\0"));
        List<String> options = new ArrayList<>();
        for (String option : all.subList(1, all.size())) {
            if (option.equals("-cp")) {
                break;
            }
            if (!ownArchive(option)) {
                options.add(option);
            }
        }
        return options;
    }

    private static final String SAMPLE = String.join("\n",
        "import java.util.*;",
        "import java.util.function.*;",
        "import java.util.stream.*;",
        "public class Main {",
        "  interface Shape { double area(); default String name() { return getClass().getSimpleName(); } }",
        "  record Circle(double r) implements Shape { public double area() { return Math.PI * r * r; } }",
        "  enum Kind { CIRCLE, SQUARE }",
        "  static abstract class Base<T extends Comparable<T>> { protected final T value; Base(T v) { value = v; } }",
        "  static final class Box extends Base<Integer> { Box(int v) { super(v); } }",
        "  static <T, R> List<R> map(List<T> in, Function<? super T, ? extends R> f) {",
        "    List<R> out = new ArrayList<>(); for (T t : in) out.add(f.apply(t)); return out; }",
        "  public static void main(String[] args) throws Exception {",
        "    Scanner in = new Scanner(System.in);",
        "    int n = in.hasNextInt() ? in.nextInt() : 3;",
        "    long[] a = new long[n]; StringBuilder sb = new StringBuilder();",
        "    for (int i = 0; i < n; i++) { a[i] = (long) i * i; sb.append(a[i]).append(' '); }",
        "    Map<Kind, List<Shape>> byKind = new EnumMap<>(Kind.class);",
        "    byKind.computeIfAbsent(Kind.CIRCLE, k -> new ArrayList<>()).add(new Circle(2));",
        "    String joined = Arrays.stream(a).mapToObj(Long::toString).collect(Collectors.joining(\",\"));",
        "    switch (n) { case 1: System.out.println(\"one\"); break; default: System.out.printf(\"%d %s%n\", n, joined); }",
        "    try { Object o = new Box(n); if (o instanceof Box b && b.value > 0) System.out.println(\"box \" + b.value); }",
        "    catch (RuntimeException e) { throw new IllegalStateException(e); }",
        "    System.out.println(sb + \" \" + map(List.of(1, 2, 3), x -> x * 2) + byKind.get(Kind.CIRCLE).get(0).name());",
        "  }",
        "}",
        "");
    private static final String WRONG = "public class Main { void f() { int x = \"not a number\"; undefined(); } }\n";

    /**
     * Compile a program with errors, then the sample, in memory (each with a compiler of its own),
     * unless the job has come: it then waits no longer than the compile under way.
     */
    private static void warmUp(InputStream control) throws IOException {
        JavaCompiler compiler = ToolProvider.getSystemJavaCompiler();
        Writer discard = new PrintWriter(OutputStream.nullOutputStream());
        for (String source : List.of(WRONG, SAMPLE)) {
            if (control.available() > 0) {
                return;
            }
            StandardJavaFileManager standard = compiler.getStandardFileManager(null, null, StandardCharsets.UTF_8);
            try (JavaFileManager memory = new InMemory(standard)) {
                compiler.getTask(discard, memory, null, List.of("-encoding", "UTF-8"), null,
                    List.of(new Source(source))).call();
            }
        }
    }

    private static final class Source extends SimpleJavaFileObject {
        private final String text;

        Source(String text) {
            super(URI.create("string:///Main.java"), JavaFileObject.Kind.SOURCE);
            this.text = text;
        }

        @Override
        public CharSequence getCharContent(boolean ignoreEncodingErrors) {
            return text;
        }
    }

    /** The standard file manager, but every class file it would write is kept in memory. */
    private static final class InMemory extends ForwardingJavaFileManager<StandardJavaFileManager> {
        InMemory(StandardJavaFileManager standard) {
            super(standard);
        }

        @Override
        public JavaFileObject getJavaFileForOutput(Location location, String className, JavaFileObject.Kind kind,
                                                   FileObject sibling) {
            return new SimpleJavaFileObject(URI.create("mem:///" + className.replace('.', '/') + kind.extension), kind) {
                @Override
                public OutputStream openOutputStream() {
                    return new ByteArrayOutputStream();
                }
            };
        }
    }
}
