// The bot on Azure: a Flex Consumption function app, its storage, monitoring and the
// Azure Bot resource, all reached with one user-assigned managed identity (no keys).
//
//   az deployment group create -g <resource group> -f infra/main.bicep -p environmentName=<name>
//
// docs/deploy.md has the whole procedure; tests/unit/test_infra.py checks this template
// against the code (settings read, route, tables and queues) without deploying it.

targetScope = 'resourceGroup'

// Any name azd accepts (AZURE_ENV_NAME); valid resource names are derived from it below.
@minLength(1)
@maxLength(64)
@description('Name of this deployment (azd passes AZURE_ENV_NAME): 1-64 letters, digits and - _ . ( ). Resource names use it lower-cased, with _ . ( ) as hyphens and cut to 20 characters, plus a token unique to subscription, resource group and name.')
param environmentName string

@description('Region of every regional resource. It must offer the Flex Consumption plan: az functionapp list-flexconsumption-locations.')
param location string = resourceGroup().location

@allowed([
  'UserAssignedMSI'
  'SingleTenant'
])
@description('UserAssignedMSI: the bot is the managed identity, no secret anywhere. SingleTenant: an existing single-tenant app registration (botAppId and botAppPassword).')
param botAppType string = 'UserAssignedMSI'

@description('SingleTenant only: the client id of the app registration.')
param botAppId string = ''

@secure()
@description('SingleTenant only: a client secret of the app registration; stored in Key Vault, never in an app setting.')
param botAppPassword string = ''

@allowed([
  'F0'
  'S1'
])
@description('Azure Bot pricing tier.')
param botSku string = 'F0'

@description('Name shown for the bot in channels and in the portal.')
param botDisplayName string = 'Proactive bot'

@minValue(1)
@maxValue(1000)
@description('Flex Consumption: most instances per scale group, not per app. The HTTP functions share one group; each queue-triggered function (jobs, sends) and the timer scale in groups of their own. Sends to one Teams tenant are paced across all instances, so more instances do not mean more sends per tenant.')
param maximumInstanceCount int = 100

@allowed([
  512
  2048
  4096
])
@description('Flex Consumption: memory of each instance, in MB.')
param instanceMemoryMB int = 2048

// Flex Consumption offers more Python versions than these; only these are in the project's test runs.
@allowed([
  '3.11'
  '3.12'
  '3.13'
])
@description('Python version of the function app: one the project is tested on (scripts/setup, the test suite).')
param pythonVersion string = '3.13'

@minValue(1)
@description('BotSendConcurrency: most Connector sends in flight per instance.')
param botSendConcurrency int = 256

@minValue(1)
@description('BotTenantRatePerSecond: Bot API requests per second per Teams tenant (or per channel without tenants), kept across all instances; Teams allows about 50.')
param botTenantRatePerSecond int = 50

@minValue(1)
@maxValue(3650)
@description('BotLedgerRetentionDays: days the delivery records of a finished job are kept (its status readable, its id taken), and its tombstone after them.')
param botLedgerRetentionDays int = 30

@description('Tags for every resource.')
param tags object = {}

var isMsi = botAppType == 'UserAssignedMSI'
var isSingleTenant = botAppType == 'SingleTenant'

// SingleTenant needs both values. fail() (Bicep 0.33 or later) stops the deployment while
// the template is evaluated, before any resource is created, with a message that names
// the missing parameter, instead of an error from the Bot Service or Key Vault later.
var botAppIdMissing = isSingleTenant && empty(botAppId)
var botAppPasswordMissing = isSingleTenant && empty(botAppPassword)
var singleTenantAppId = botAppIdMissing ? fail('botAppType is SingleTenant but botAppId is empty: set botAppId (azd: BOT_APP_ID) to the client id of the app registration.') : (botAppPasswordMissing ? fail('botAppType is SingleTenant but botAppPassword is empty: set botAppPassword (azd: BOT_APP_PASSWORD) to a client secret of the app registration.') : botAppId)

// Names. The token depends on subscription, resource group and environmentName only, so
// a redeploy finds the same resources (above all the identity, whose client id is the
// bot's app id). The prefix makes any azd name valid in every resource type: lower case,
// _ . ( ) as hyphens, at most 20 characters; each name starts with a letter and ends with
// the token. Names of 20 characters or fewer of letters, digits and hyphens give the same
// resource names as before.
var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var namePrefix = take(replace(replace(replace(replace(toLower(environmentName), '_', '-'), '.', '-'), '(', '-'), ')', '-'), 20)
var allTags = union(tags, {
  'azd-env-name': environmentName
})
var functionAppName = 'func-${namePrefix}-${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'

// The one identity: storage, monitoring, Key Vault references and the bot itself.
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${namePrefix}-${resourceToken}'
  location: location
  tags: allTags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: allTags
    workspaceName: 'log-${namePrefix}-${resourceToken}'
    appInsightsName: 'appi-${namePrefix}-${resourceToken}'
    principalId: identity.properties.principalId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    tags: allTags
    name: 'st${resourceToken}'
    deploymentContainerName: deploymentContainerName
    principalId: identity.properties.principalId
  }
}

// Only for a SingleTenant app registration: its secret lives here, read by the identity.
module keyVault 'modules/keyvault.bicep' = if (isSingleTenant) {
  name: 'keyvault'
  params: {
    location: location
    tags: allTags
    name: 'kv-${resourceToken}'
    secretName: 'MicrosoftAppPassword'
    secretValue: botAppPassword
    principalId: identity.properties.principalId
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    location: location
    tags: allTags
    // Only the site: azd before 1.23.4 refuses to deploy when two resources carry one service tag.
    siteTags: {
      'azd-service-name': 'bot'
    }
    planName: 'plan-${namePrefix}-${resourceToken}'
    name: functionAppName
    identityId: identity.id
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    pythonVersion: pythonVersion
  }
}

var publicBaseUrl = 'https://${functionApp.outputs.defaultHostName}'
var messagingEndpoint = 'https://${functionApp.outputs.defaultHostName}/api/messages'

// App settings, exactly the ones the host and the code read (tests/unit/test_infra.py).
// The host's storage by service URI, not __accountName: the host expands an account name
// with the public cloud's suffix; the URIs carry this cloud's (US Government included).
var hostSettings = {
  AzureWebJobsStorage__blobServiceUri: storage.outputs.blobServiceUri
  AzureWebJobsStorage__queueServiceUri: storage.outputs.queueServiceUri
  AzureWebJobsStorage__tableServiceUri: storage.outputs.tableServiceUri
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  // The host reads a request body up to this size before any function sees it (its default is 100 MB);
  // the bot's largest body is BotMaxBodyBytes (256 KiB).
  FUNCTIONS_REQUEST_BODY_SIZE_LIMIT: '1048576'
}
var botStorageSettings = {
  BotStorage__tableServiceUri: storage.outputs.tableServiceUri
  BotStorage__queueServiceUri: storage.outputs.queueServiceUri
  BotStorage__credential: 'managedidentity'
  BotStorage__clientId: identity.properties.clientId
}
var botSettings = {
  MicrosoftAppType: botAppType
  MicrosoftAppId: isMsi ? identity.properties.clientId : singleTenantAppId
  MicrosoftAppTenantId: tenant().tenantId
  BotPublicBaseUrl: publicBaseUrl
  BotSendConcurrency: string(botSendConcurrency)
  BotTenantRatePerSecond: string(botTenantRatePerSecond)
  BotLedgerRetentionDays: string(botLedgerRetentionDays)
}
// botcore knows the public and the US Government Bot Framework; ChannelService selects the latter.
var cloudName = environment().name // a variable of its own: pycep misreads environment().name == '...'
var isUsGovernment = cloudName == 'AzureUSGovernment'
var cloudSettings = isUsGovernment ? {
  ChannelService: 'https://botframework.azure.us'
} : {}
var secretSettings = isSingleTenant ? {
  MicrosoftAppPassword: '@Microsoft.KeyVault(SecretUri=${keyVault!.outputs.secretUri})'
} : {}

module appSettings 'modules/appsettings.bicep' = {
  name: 'appsettings'
  params: {
    functionAppName: functionApp.outputs.name
    appSettings: union(hostSettings, botStorageSettings, botSettings, cloudSettings, secretSettings)
  }
}

module bot 'modules/bot.bicep' = {
  name: 'bot'
  params: {
    tags: allTags
    name: 'bot-${namePrefix}-${resourceToken}'
    displayName: botDisplayName
    sku: botSku
    endpoint: messagingEndpoint
    appType: botAppType
    appId: isMsi ? identity.properties.clientId : singleTenantAppId
    tenantId: tenant().tenantId
    msiResourceId: isMsi ? identity.id : ''
  }
}

// Outputs in azd's form: azd keeps each in the environment under its name (azd env get-values). None is a
// variable main.parameters.json reads, so a value never feeds back into the next provision.
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_BOT_BASE_URL string = publicBaseUrl
output AZURE_BOT_MESSAGING_ENDPOINT string = messagingEndpoint
output AZURE_BOT_NAME string = bot.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.properties.clientId
output AZURE_BOT_APP_ID string = isMsi ? identity.properties.clientId : singleTenantAppId
// The host key opens every function-level route of the API (notify, notify/{id}, reminders); a function's own key, only
// that function's (docs/deploy.md, "The API's key").
output API_KEY_COMMAND string = 'az functionapp keys list --resource-group ${resourceGroup().name} --name ${functionApp.outputs.name} --query functionKeys.default --output tsv'
