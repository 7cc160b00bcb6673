#!/usr/bin/env bash
# Finds or builds lowkey-vault (nagyesta/lowkey-vault, the Azure Key Vault emulator) and prints the path of
# its executable jar as the last line. Beside the jar it leaves what the test harness needs:
#   lowkey-vault.pem   the self-signed TLS certificate it serves (trust it in clients)
#   java-home          a Java >= 25 runtime to run it with (one line)
# Tried in order, each step logged to stderr:
#   1. installed: $LOWKEY_VAULT_JAR (its folder gets the files above in the cache when it lacks them);
#   2. upstream: com.github.nagyesta.lowkey-vault:lowkey-vault-app:<pinned version> from Maven Central
#      (mvn dependency:copy), cached under
#      ${MANAGED_SECRETS_SERVERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/managed-secrets/servers};
#   3. source: ../shared/servers/lowkey-vault/build.sh (relative to the repo, or to the main checkout of a
#      git worktree; MANAGED_SECRETS_SHARED_SERVERS overrides ../shared/servers) where it exists.
# Exits non-zero, naming each step's failure, when none works. Java: LOWKEY_JAVA_HOME, JAVA_HOME, or the
# newest-enough one under /usr/lib/jvm.
set -euo pipefail

ARTIFACT="com.github.nagyesta.lowkey-vault:lowkey-vault-app"
VERSION="${LOWKEY_VAULT_VERSION:-7.3.74}"
# shellcheck source=lib/servers.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/servers.sh"
shared="$shared_root/lowkey-vault"
failures=()

java_major() {  # the feature version of the Java at $1, or nothing
  [[ -x "$1/bin/java" ]] || return 0
  "$1/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p' | head -1
}

find_java() {
  local c v
  for c in "${LOWKEY_JAVA_HOME:-}" "${JAVA_HOME:-}" /usr/lib/jvm/*; do
    [[ -n "$c" && -d "$c" ]] || continue
    v="$(java_major "$c")"
    if [[ -n "$v" && "$v" -ge 25 ]]; then
      (cd "$c" && pwd -P)
      return 0
    fi
  done
  return 1
}

# Puts lowkey-vault.pem and java-home into $2 for the jar $1 (the certificate is inside the jar).
complete_dir() {
  local jar="$1" dir="$2" java="$3" tmp
  [[ -f "$dir/java-home" ]] || echo "$java" > "$dir/java-home"
  [[ -f "$dir/lowkey-vault.pem" ]] && return 0
  tmp="$(mktemp -d)"
  (cd "$tmp" && "$java/bin/jar" xf "$jar" BOOT-INF/classes/cert/keystore.p12) &&
    "$java/bin/keytool" -exportcert -rfc -alias lowkey-vault.local -storetype PKCS12 -storepass changeit \
      -keystore "$tmp/BOOT-INF/classes/cert/keystore.p12" -file "$dir/lowkey-vault.pem" >/dev/null 2>&1
  local rc=$?
  rm -rf "$tmp"
  return $rc
}

java="$(find_java)" || {
  echo "lowkey-vault: no Java >= 25 found (LOWKEY_JAVA_HOME, JAVA_HOME, /usr/lib/jvm/*): it needs one to run" >&2
  exit 1
}

# 1. installed
if [[ -n "${LOWKEY_VAULT_JAR:-}" ]]; then
  if [[ -f "$LOWKEY_VAULT_JAR" ]]; then
    dir="$(dirname "$LOWKEY_VAULT_JAR")"
    if [[ ! -f "$dir/lowkey-vault.pem" || ! -f "$dir/java-home" ]]; then
      # Leave the installed folder alone: a copy of the jar goes into the cache with its companions.
      dir="$cache_root/lowkey-vault/installed-$(sha256sum "$LOWKEY_VAULT_JAR" | cut -c1-16)"
      mkdir -p "$dir"
      [[ -f "$dir/lowkey-vault-app.jar" ]] || cp "$LOWKEY_VAULT_JAR" "$dir/lowkey-vault-app.jar"
    fi
    jar="$dir/$(basename "$LOWKEY_VAULT_JAR")"
    [[ -f "$jar" ]] || jar="$dir/lowkey-vault-app.jar"
    if complete_dir "$jar" "$dir" "$java"; then
      echo "lowkey-vault: installed ($LOWKEY_VAULT_JAR from LOWKEY_VAULT_JAR)" >&2
      echo "$jar"
      exit 0
    fi
    failures+=("installed: could not export the TLS certificate from $LOWKEY_VAULT_JAR")
  else
    failures+=("installed: LOWKEY_VAULT_JAR=$LOWKEY_VAULT_JAR is not a file")
  fi
else
  failures+=("installed: LOWKEY_VAULT_JAR unset")
fi

# 2. upstream jar from Maven Central
up="$cache_root/lowkey-vault/maven-$VERSION"
if [[ -f "$up/lowkey-vault-app.jar" && -f "$up/lowkey-vault.pem" ]]; then
  echo "lowkey-vault: upstream $ARTIFACT:$VERSION already fetched ($up)" >&2
  echo "$up/lowkey-vault-app.jar"
  exit 0
fi
if ! command -v mvn >/dev/null; then
  failures+=("upstream: mvn not found on PATH")
elif [[ -e "$up/.failed" && -z "${LOWKEY_VAULT_RETRY:-}" ]]; then
  # Tried before on this machine: don't ask Maven Central again every run (LOWKEY_VAULT_RETRY=1 does).
  failures+=("upstream: mvn dependency:copy of $ARTIFACT:$VERSION failed before ($(head -c 300 "$up/.failed"))")
else
  mkdir -p "$up"
  if out="$(JAVA_HOME="$java" MAVEN_OPTS="${MAVEN_OPTS:-} --sun-misc-unsafe-memory-access=allow" \
      mvn -B -q -Dstyle.color=never dependency:copy -Dartifact="$ARTIFACT:$VERSION:jar" \
      -DoutputDirectory="$up/tmp" -Dmdep.stripVersion=true 2>&1)" && [[ -f "$up/tmp/lowkey-vault-app.jar" ]] &&
      complete_dir "$up/tmp/lowkey-vault-app.jar" "$up/tmp" "$java"; then
    mv "$up/tmp/"* "$up/" && rmdir "$up/tmp"
    echo "lowkey-vault: fetched upstream $ARTIFACT:$VERSION into $up" >&2
    echo "$up/lowkey-vault-app.jar"
    exit 0
  fi
  rm -rf "$up/tmp"
  reason="$(printf '%s' "$out" | sed 's/\x1b\[[0-9;]*m//g' | grep -m3 -E 'ERROR|Could not' | tr '\n' ' ' | cut -c1-400)"
  printf '%s' "${reason:-no jar}" > "$up/.failed"
  failures+=("upstream: mvn dependency:copy of $ARTIFACT:$VERSION failed: ${reason:-no jar}")
fi

# 3. source build from the shared folder
if [[ -f "$shared/build.sh" ]]; then
  # A cold Maven build prints colour resets without a newline on stdout: strip escapes from the path line.
  if jar="$(LOWKEY_JAVA_HOME="$java" bash "$shared/build.sh" | tail -1 | sed 's/\x1b\[[0-9;]*m//g')" &&
      [[ -f "$jar" ]]; then
    echo "$jar"
    exit 0
  fi
  failures+=("source: $shared/build.sh failed (see its output above)")
else
  failures+=("source: $shared/build.sh not found")
fi

echo "lowkey-vault: no way to get it worked:" >&2
printf '  %s\n' "${failures[@]}" >&2
exit 1
