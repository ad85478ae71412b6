<#
.SYNOPSIS
  Install the quantrac edge agent as a Windows service (WinSW) on a station PC.

.DESCRIPTION
  Run in an elevated PowerShell. It
    1. checks Python 3.11 (the py launcher) and makes a venv under -Root with quantrac from -Wheel;
    2. copies the station file, the station's key, the broker password and the broker's CA under -Root,
       the two secrets into -Root\secrets, readable by SYSTEM and Administrators only (icacls);
    3. runs `quantrac agent doctor` once, so a wrong address or unit id shows before the service exists;
    4. writes quantrac-agent.xml from scripts\windows\quantrac-agent.xml beside a copy of WinSW
       (-WinSW: WinSW-x64.exe, downloaded by you: nothing here downloads a program), then installs
       and starts the service, which runs as LocalSystem and restarts after every failure.
  Re-running replaces the venv's quantrac and the XML; the outbox in -Root\state is kept.

  Not tested on Windows by the project (no Windows machine): see docs/deployment.md.

.EXAMPLE
  .\install-agent.ps1 -Wheel .\quantrac-0.1.0-py3-none-any.whl -WinSW .\WinSW-x64.exe `
      -StationFile .\station.yaml -Key .\HN_AIR_001.key -Broker mqtt.example.vn:8883 `
      -BrokerUser HN_AIR_001 -PasswordFile .\HN_AIR_001.password -TlsCa .\ca.crt
#>
param(
    [Parameter(Mandatory = $true)] [string] $Wheel,
    [Parameter(Mandatory = $true)] [string] $WinSW,
    [Parameter(Mandatory = $true)] [string] $StationFile,
    [Parameter(Mandatory = $true)] [string] $Key,
    [Parameter(Mandatory = $true)] [string] $Broker,
    [string] $BrokerUser,
    [string] $PasswordFile,
    [string] $TlsCa,
    [string] $Root = "$env:ProgramData\quantrac"
)
$ErrorActionPreference = "Stop"

function Fail([string] $message) { Write-Error "install-agent: $message"; exit 1 }

$principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    Fail "run this in an elevated PowerShell (Run as administrator)"
}
foreach ($file in @($Wheel, $WinSW, $StationFile, $Key) + @($PasswordFile, $TlsCa | Where-Object { $_ })) {
    if (-not (Test-Path -PathType Leaf $file)) { Fail "$file not found" }
}
if (($BrokerUser -and -not $PasswordFile) -or ($PasswordFile -and -not $BrokerUser)) {
    Fail "-BrokerUser and -PasswordFile go together"
}
& py -3.11 -c "import sys" 2>$null
if ($LASTEXITCODE -ne 0) { Fail "Python 3.11 not found (py -3.11): install it from python.org, with the py launcher" }

foreach ($dir in @("", "state", "logs", "secrets", "pki")) { New-Item -ItemType Directory -Force "$Root\$dir" | Out-Null }

$venv = "$Root\venv"
if (-not (Test-Path "$venv\Scripts\python.exe")) { & py -3.11 -m venv $venv; if ($LASTEXITCODE) { Fail "py -3.11 -m venv failed" } }
& "$venv\Scripts\python.exe" -m pip install --upgrade --force-reinstall --no-warn-script-location $Wheel
if ($LASTEXITCODE -ne 0) { Fail "pip install $Wheel failed" }

Copy-Item -Force $StationFile "$Root\station.yaml"
Copy-Item -Force $Key "$Root\secrets\station.key"
if ($PasswordFile) { Copy-Item -Force $PasswordFile "$Root\secrets\broker.password" }
if ($TlsCa) { Copy-Item -Force $TlsCa "$Root\pki\ca.crt" }
# the secrets: no inherited access, SYSTEM (the service) reads, Administrators manage
& icacls "$Root\secrets" /inheritance:r /grant:r "*S-1-5-18:(OI)(CI)R" "*S-1-5-32-544:(OI)(CI)F" | Out-Null
if ($LASTEXITCODE -ne 0) { Fail "icacls on $Root\secrets failed" }

$login = ""
if ($BrokerUser) { $login = "--broker-user $BrokerUser --broker-password-file `"$Root\secrets\broker.password`"" }
$tls = ""
if ($TlsCa) { $tls = "--tls-ca `"$Root\pki\ca.crt`"" }

Write-Host "install-agent: quantrac agent doctor (one probe of every value)"
& "$venv\Scripts\quantrac.exe" agent doctor "$Root\station.yaml"
if ($LASTEXITCODE -ne 0) { Write-Warning "agent doctor reported problems (above); the service is installed anyway" }

$template = Join-Path $PSScriptRoot "quantrac-agent.xml"
$xml = (Get-Content -Raw $template).Replace("@ROOT@", $Root).Replace("@BROKER@", $Broker).Replace("@LOGIN@", $login).Replace("@TLS@", $tls)
$service = "$Root\quantrac-agent.exe"
$existing = Get-Service -Name "quantrac-agent" -ErrorAction SilentlyContinue
if ($existing) { & $service stop | Out-Null; & $service uninstall | Out-Null }
Copy-Item -Force $WinSW $service
Set-Content -Encoding UTF8 -Path "$Root\quantrac-agent.xml" -Value $xml
& $service install; if ($LASTEXITCODE -ne 0) { Fail "WinSW install failed" }
& $service start; if ($LASTEXITCODE -ne 0) { Fail "WinSW start failed; see $Root\logs" }
Write-Host "install-agent: service quantrac-agent running; logs in $Root\logs, outbox in $Root\state"
