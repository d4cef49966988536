package integration

// The container image's entrypoint, without Docker: deploy/Dockerfile and
// deploy/Dockerfile.multistage must make the consumer the ENTRYPOINT (exec
// form, an absolute path the final stage copies a binary to), so that
// `docker run IMAGE --help` and `docker run IMAGE [flags]` run the
// consumer, and have no CMD naming a program (it would become the
// consumer's first argument). Every service of deploy/compose.yaml either
// runs that entrypoint with flags only, or sets an entrypoint that the
// image holds. Each of these command lines is then run with the test's
// binaries and --help appended: exit 0 means the program exists and
// accepts every flag given to it. TestContainers runs the real image where
// a Docker engine is reachable.

import (
	"bufio"
	"encoding/json"
	"os"
	"path"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// dockerfileFinal is the final stage of a Dockerfile as far as running it
// goes: where COPY puts which source, the ENTRYPOINT and the CMD.
type dockerfileFinal struct {
	copies     map[string]string // destination path -> source base name
	entrypoint []string
	cmd        []string
	hasCmd     bool
}

func parseDockerfile(t *testing.T, file string) dockerfileFinal {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st dockerfileFinal
	var logical string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			logical += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		logical += line
		instr, rest, _ := strings.Cut(logical, " ")
		logical = ""
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			st = dockerfileFinal{copies: map[string]string{}} // a new stage
		case "COPY":
			var args []string
			for _, a := range strings.Fields(rest) {
				if !strings.HasPrefix(a, "--") {
					args = append(args, a)
				}
			}
			if len(args) == 2 && !strings.HasSuffix(args[1], "/") {
				st.copies[args[1]] = path.Base(args[0])
			}
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(rest), &v); err != nil {
				t.Errorf("%s: %s %s is not in exec form (a JSON array): the image has no shell", file, instr, rest)
				continue
			}
			if strings.EqualFold(instr, "CMD") {
				st.cmd, st.hasCmd = v, true
			} else {
				st.entrypoint = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestImageEntrypoint(t *testing.T) {
	bins := buildBinaries(t)
	var image dockerfileFinal
	for i, name := range []string{"deploy/Dockerfile", "deploy/Dockerfile.multistage"} {
		st := parseDockerfile(t, bins.RepoPath(name))
		if len(st.entrypoint) != 1 || !path.IsAbs(st.entrypoint[0]) {
			t.Fatalf("%s: ENTRYPOINT %q, want the consumer's absolute path alone", name, st.entrypoint)
		}
		if src := st.copies[st.entrypoint[0]]; src != "consumer" {
			t.Errorf("%s: ENTRYPOINT %s is the copy of %q, want the consumer", name, st.entrypoint[0], src)
		}
		if st.hasCmd && len(st.cmd) > 0 && !strings.HasPrefix(st.cmd[0], "-") {
			t.Errorf("%s: CMD %q names a program; with the consumer as ENTRYPOINT it would be its first argument", name, st.cmd)
		}
		for _, b := range []string{"producer", "devbroker"} {
			found := false
			for _, src := range st.copies {
				found = found || src == b
			}
			if !found {
				t.Errorf("%s: the image does not hold the %s", name, b)
			}
		}
		if i == 0 {
			image = st
		} else if !equalMaps(image.copies, st.copies) || strings.Join(image.entrypoint, " ") != strings.Join(st.entrypoint, " ") {
			t.Errorf("deploy/Dockerfile and %s lay the image out differently: %v %q vs %v %q",
				name, image.copies, image.entrypoint, st.copies, st.entrypoint)
		}
	}

	// run runs argv as the image would, with the test's binaries.
	run := func(what string, argv []string) {
		t.Helper()
		src, ok := image.copies[argv[0]]
		if !ok {
			t.Errorf("%s: %s is not a program in the image (%v)", what, argv[0], image.copies)
			return
		}
		r := runBinary(t, time.Minute, bins.Path(src), append(argv[1:], "--help")...)
		if r.Code != 0 {
			t.Errorf("%s: %s %q --help: exit %d (a flag it does not know?)\n%s", what, src, argv[1:], r.Code, tail(r.Stderr, 2000))
		}
	}
	// docker run IMAGE --help; docker run IMAGE --brokers ... (flags only).
	run("docker run IMAGE --help", image.entrypoint)
	run("docker run IMAGE [flags]", append(append([]string{}, image.entrypoint...), "--brokers", "kafka:9092", "--topic", "tx"))
	// The documented --entrypoint for the other programs.
	run("docker run --entrypoint /usr/local/bin/txstream-producer", []string{"/usr/local/bin/txstream-producer", "--file", "/data/tx.csv"})
	run("docker run --entrypoint /usr/local/bin/txstream-devbroker", []string{"/usr/local/bin/txstream-devbroker", "--addr", "0.0.0.0:9092"})

	// deploy/compose.yaml: what each service runs.
	b, err := os.ReadFile(bins.RepoPath("deploy/compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Entrypoint stringList `yaml:"entrypoint"`
			Command    stringList `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("deploy/compose.yaml: %v", err)
	}
	if len(compose.Services) == 0 {
		t.Fatal("deploy/compose.yaml: no services")
	}
	for name, svc := range compose.Services {
		argv := append([]string{}, image.entrypoint...)
		if len(svc.Entrypoint) > 0 {
			argv = append([]string{}, svc.Entrypoint...)
		}
		if len(svc.Command) > 0 && len(svc.Entrypoint) == 0 && !strings.HasPrefix(svc.Command[0], "-") {
			t.Errorf("compose service %s: command %q starts with a program name but sets no entrypoint: the consumer would get it as an argument", name, svc.Command)
			continue
		}
		run("compose service "+name, append(argv, svc.Command...))
	}
}

// stringList is a compose string-or-list value.
type stringList []string

func (s *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*s = strings.Fields(n.Value)
		return nil
	}
	var l []string
	if err := n.Decode(&l); err != nil {
		return err
	}
	*s = l
	return nil
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
